"""The request's own fields: its id (sent back as `X-Request-Id`), its route, its status and
how long it took, logged as one access line when logs are JSON."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modhub.telemetry import tracing
from modhub.telemetry.context import REQUEST_ID_HEADER, bind, request_id_from
from modhub.telemetry.templates import RouteTemplates

access = logging.getLogger("modhub.access")
_HEADER = REQUEST_ID_HEADER.lower().encode()


class RequestContext:
    """Opens the request's log fields around every HTTP request (pure ASGI, so streaming
    responses pass through untouched).

    `access_log`: log one line per request (`modhub.access`, INFO) with its route, status
    and duration; on with `MODHUB_LOG_FORMAT=json`, where a log pipeline wants it.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.template = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers") or ():
            if name == _HEADER:
                incoming = value.decode("latin-1")
                break
        rid = request_id_from(incoming)
        started = time.perf_counter()
        with bind(requestId=rid) as fields:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    fields["status"] = message["status"]
                    if tracing.tracer() is not None:  # the request's span, for its lines
                        fields.update(tracing.current_ids())
                    headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER]
                    headers.append((_HEADER, rid.encode()))
                    message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if self.access_log:
                    fields.setdefault("route", self.template(scope))
                    _log_access(scope, fields, time.perf_counter() - started)


def install(app: Starlette, *, access_log: bool = False) -> None:
    """Put `RequestContext` around the whole of `app`, outside Starlette's own error
    middleware (`add_middleware` would put it inside): an unexpected error's 500 then
    carries the request's id too, in its header, its problem document and its log line."""
    build = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        return RequestContext(build(), access_log=access_log)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


def _log_access(scope: Scope, fields: dict[str, Any], seconds: float) -> None:
    fields["durationMs"] = round(seconds * 1000, 3)
    fields.setdefault("status", 500)  # no response started: the server failed it
    access.info("%s %s %s", scope.get("method"), scope.get("path"), fields["status"])
