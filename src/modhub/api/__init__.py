"""The HTTP API under /api/v1."""

from modhub.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
