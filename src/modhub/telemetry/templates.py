"""The route template a request reached: the one label both the request metrics and the
JSON access line use (a raw path is never a label: it is unbounded and may hold ids)."""

from __future__ import annotations

from starlette.types import Scope


class RouteTemplates:
    """Maps the route object in an ASGI scope to its full path template, learnt once."""

    def __init__(self) -> None:
        self._templates: dict[int, str] | None = None  # route object → its full template

    def __call__(self, scope: Scope) -> str | None:
        """Return the full path template of the route `scope` reached (None: no route)."""
        route = scope.get("route")
        if route is None:
            return None
        if self._templates is None:
            from fastapi.routing import iter_route_contexts

            # An included router's route knows its path without the prefix: the app's
            # route contexts give the full one. The routes are fixed once the app serves.
            self._templates = {
                id(context.original_route): context.path_format
                for context in iter_route_contexts(scope["app"].routes)
                if context.path_format
            }
        return self._templates.get(id(route)) or getattr(route, "path", None)
