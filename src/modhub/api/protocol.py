"""uvicorn HTTP protocols that refuse a request head over 64 KiB with 431, before any work.

httptools keeps every header byte it is fed (a 300 MB header was read whole), and h11's own
bound answers 400. These subclasses count the bytes of each request head (request line and
headers) before the parser sees them; past `MAX_HEAD_BYTES` they answer 431 without
feeding the parser any more, half-close, drop at most `DRAIN_BYTES` more (so that a client
that stopped sending reads the answer, not a reset), then close. `modhub serve` passes
`server_options()` to uvicorn.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
DRAIN_BYTES = 256 * 1024  # read and dropped after a 431, then the connection is closed
LINGER_SECONDS = 5.0  # how long a refused connection may stay open, sending nothing

_BODY = json.dumps(
    {
        "type": "urn:modhub:problem:request-header-fields-too-large",
        "title": "Request header fields too large",
        "status": 431,
        "detail": f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
    }
).encode()
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class HeadLimit(asyncio.Protocol):
    """Mixin before a uvicorn HTTP protocol: bounds each request head, answering 431."""

    transport: asyncio.Transport
    _head_bytes = 0  # bytes of the current request head fed to the parser
    _dropped: int | None = None  # once refused: bytes dropped since
    _linger: asyncio.TimerHandle | None = None

    def _reading_head(self) -> bool:
        """Return whether the parser waits for (more of) a request head."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._dropped is not None:
            self._drop(len(data))
            return
        while data and self._reading_head():
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:  # the head goes on past the bound
                self._refuse()
                self._drop(len(data))
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():  # the parser refused it (400)
                return
        if data:
            super().data_received(data)  # a body, or what follows a complete head

    def _refuse(self) -> None:
        self.transport.write(REFUSAL)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._dropped = 0
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(LINGER_SECONDS, self.transport.close)

    def _drop(self, size: int) -> None:
        assert self._dropped is not None
        self._dropped += size
        if self._dropped > DRAIN_BYTES:
            self.transport.close()  # unread bytes left: the peer gets a reset

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)


class H11HeadLimit(HeadLimit, H11Protocol):
    """uvicorn's h11 protocol (the pure-Python fallback) with the bound; h11's own limit,
    set to the same size, bounds what arrives while a response is still being sent."""

    def _reading_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def on_response_complete(self) -> None:
        self._head_bytes = 0  # the next request's head starts now
        super().on_response_complete()


class HttpToolsHeadLimit(HeadLimit, HttpToolsProtocol):
    """uvicorn's httptools protocol (the C parser, what `modhub serve` uses) with the bound."""

    _in_head = True

    def _reading_head(self) -> bool:
        return self._in_head

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # a pipelined request may follow


def server_options(http: str = "httptools") -> dict[str, Any]:
    """Return the uvicorn options that bound request heads, for the httptools or h11 parser."""
    protocols: dict[str, type[asyncio.Protocol]] = {
        "httptools": HttpToolsHeadLimit,
        "h11": H11HeadLimit,
    }
    return {"http": protocols[http], "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
