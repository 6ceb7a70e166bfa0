"""Redirects to the server's own origin are sent as paths, never built from the Host header."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RelativeRedirects:
    """ASGI middleware: a redirect to the origin the request named is sent as a path.

    Starlette builds absolute redirects (its trailing-slash ones among them) from the Host
    header, so `/api/v1/modules/` with `Host: evil.example` redirected to evil.example. A
    redirect elsewhere (a module sending its caller to another site) is left as it is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _origin(scope)

        async def relative_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                message = {
                    **message,
                    "headers": [
                        (name, _relative(value, origin) if name.lower() == b"location" else value)
                        for name, value in message.get("headers", [])
                    ],
                }
            await send(message)

        await self.app(scope, receive, relative_send)


def _origin(scope: Scope) -> tuple[str, str]:
    """Return the scheme and host[:port] the request was sent to, as Starlette reads them."""
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
    if not host and scope.get("server"):
        name, port = scope["server"]
        host = f"{name}:{port}"
    return str(scope.get("scheme", "http")), host.lower()


def _relative(location: bytes, origin: tuple[str, str]) -> bytes:
    parts = urlsplit(location.decode("latin-1"))
    if not parts.netloc or (parts.scheme, parts.netloc.lower()) != origin:
        return location
    # One leading slash: "//evil.example/x" would be a link to another host.
    relative = "/" + parts.path.lstrip("/")
    if parts.query:
        relative += "?" + parts.query
    if parts.fragment:
        relative += "#" + parts.fragment
    return relative.encode("latin-1")
