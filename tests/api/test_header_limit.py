"""Request heads over 64 KiB answer 431 before any other work, with memory bounded.

The attack: a 300 MB request header, sent without a token, was read whole (480 MB of
server memory). Each test talks to a real server over a raw socket: uvicorn in a thread
with each parser's protocol, and `modhub serve` itself.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from modhub.api.protocol import DRAIN_BYTES, MAX_HEAD_BYTES, server_options
from tests.conftest import LiveServer, free_port, start_server, stop_server

KIB, MIB = 1024, 1024 * 1024


def head(size: int, path: str = "/healthz", end: bool = True) -> bytes:
    """Return a GET request head of about `size` bytes (padded with X-Pad headers)."""
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    pads = (size - len(start)) // len(line)
    return start + line * pads + (b"\r\n" if end else b"")


def read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(reader: BinaryIO) -> bytes:
    """Read one response with a Content-Length body from the connection's reader."""
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line)
    length = next(
        (int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")),
        0,
    )
    return b"".join(lines) + b"\r\n" + reader.read(length)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 200 with the number of headers received."""
    if scope["type"] != "http":
        return
    body = str(len(scope["headers"])).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module", params=["httptools", "h11"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """Serve `app` with uvicorn and the given parser, as `modhub serve` configures it."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **server_options(request.param)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def test_a_head_over_the_limit_is_refused_before_it_ends(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(head(MAX_HEAD_BYTES + 6 * KIB, end=False))  # and never finish it
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"urn:modhub:problem:request-header-fields-too-large" in answer


def test_a_head_just_under_the_limit_is_served_twice_on_one_connection(port: int) -> None:
    with connect(port) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):  # the count starts again for the next request
            sock.sendall(head(60 * KIB))
            answer = read_response(reader)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            headers = head(60 * KIB).count(b"X-Pad") + 1  # and Host
            assert answer.endswith(b"\r\n\r\n%d" % headers)


def test_pipelined_requests_each_get_their_own_bound(port: int) -> None:
    with connect(port) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head(40 * KIB) + head(40 * KIB))
        assert read_response(reader).startswith(b"HTTP/1.1 200")
        assert read_response(reader).startswith(b"HTTP/1.1 200")


def stream_head(port: int, total: int) -> int:
    """Send an endless request head; return the bytes sent before the server cut it off."""
    sent = 0
    chunk = b"X-Pad: " + b"a" * (64 * KIB - 9) + b"\r\n"
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the server closed it
            return sent
    return sent


def test_an_endless_head_is_cut_off_early(port: int) -> None:
    sent = stream_head(port, 50 * MIB)
    # The server reads MAX_HEAD_BYTES + DRAIN_BYTES; the rest is what the kernel buffers
    # of both sockets held (a few MB on loopback) when it closed.
    assert sent < 16 * MIB, f"{sent / MIB:.0f} MB sent before the server closed"
    assert DRAIN_BYTES < MIB


# -- `modhub serve` ------------------------------------------------------------------------


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real `modhub serve` (on SQLite: the head never reaches the database)."""
    server = start_server(tmp_path_factory.mktemp("serve") / "data")
    yield server
    stop_server(server)


def test_modhub_serve_refuses_an_endless_head_without_a_token(served: LiveServer) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with connect(port) as sock:
        sock.sendall(head(MAX_HEAD_BYTES + KIB, path="/api/v1/modules", end=False))
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    before = rss(served.process.pid)
    sent = stream_head(port, 50 * MIB)
    assert sent < 16 * MIB, f"{sent / MIB:.0f} MB sent before the server closed"
    growth = rss(served.process.pid) - before
    assert growth < 16 * MIB, f"the server grew by {growth / MIB:.0f} MB"
    with connect(port) as sock:
        sock.sendall(head(60 * KIB))
        assert read_response(sock.makefile("rb")).startswith(b"HTTP/1.1 200")
