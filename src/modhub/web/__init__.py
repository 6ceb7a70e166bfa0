"""The operator console (static files, no build step) and module UI pages on demand."""

from modhub.web.router import console_router, ui_api_router

__all__ = ["console_router", "ui_api_router"]
