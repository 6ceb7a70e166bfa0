"""`serve --workers N` (api/supervisor.py): N sockets on one port, one per process, and a
process that died replaced on the socket it left. (The spread of real connections over two
real processes: tests/cluster/test_workers.py.)"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from modhub.api.supervisor import Spread, listening_sockets


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    found = listening_sockets("127.0.0.1", 0, 3, 16)
    yield found
    for sock in found:
        sock.close()


def test_the_sockets_listen_on_one_port_each_accepting_connections(
    sockets: list[socket.socket],
) -> None:
    ports = {sock.getsockname()[1] for sock in sockets}
    assert len(ports) == 1
    assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
    (port,) = ports
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    try:
        accepted = 0
        for sock in sockets:
            sock.setblocking(False)
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                accepted += 1
        assert accepted == 30  # every connection waits on one of the sockets
    finally:
        for client in clients:
            client.close()


def test_connections_accepted_on_them_get_tcp_nodelay(sockets: list[socket.socket]) -> None:
    """asyncio turns Nagle off for a TCP connection whose socket says IPPROTO_TCP: with
    Nagle on, an answer written in two parts waited 40 ms for the client's delayed ACK."""
    port = sockets[0].getsockname()[1]

    async def main() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        servers = [await asyncio.start_server(connected, sock=sock) for sock in sockets]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(accepted, 30)
        finally:
            writer.close()
            for server in servers:
                server.close()

    assert asyncio.run(main()) == 1


class Stand:
    """A stand-in for uvicorn's Process: its multiprocessing process's exit code."""

    def __init__(self) -> None:
        self.process = SimpleNamespace(exitcode=None)


def spread(sockets: list[socket.socket]) -> Spread:
    supervisor = Spread.__new__(Spread)  # no signal handlers installed in the test process
    supervisor.given = weakref.WeakKeyDictionary()
    supervisor.last = None
    supervisor.sockets = sockets
    supervisor.processes = []
    return supervisor


def start(supervisor: Spread) -> tuple[Stand, list[socket.socket]]:
    """Start a process as uvicorn does: read `sockets`, then the process joins the list."""
    given = supervisor.sockets
    process = Stand()
    supervisor.processes.append(process)
    return process, given


def test_each_process_started_gets_the_socket_no_live_process_holds(
    sockets: list[socket.socket],
) -> None:
    a, b, c = sockets
    supervisor = spread(sockets)
    started = [start(supervisor) for _ in range(3)]
    assert [given for _, given in started] == [[a], [b], [c]]
    # b's process died: its replacement (put in its place) takes b, where no one accepts
    started[1][0].process.exitcode = -9
    replacement = supervisor.sockets
    supervisor.processes[1] = Stand()
    assert replacement == [b]
    # and the next one started (SIGTTIN) shares the least held: a, after b's replacement
    assert start(supervisor)[1] == [a]
    assert supervisor.given[supervisor.processes[1]] is b
