"""The HTTP API under /api/v1: `modhub.api.app.create_app` builds it."""
