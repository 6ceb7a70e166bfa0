"""`modhub serve --workers N`: uvicorn's supervisor, each process on a socket of its own.

uvicorn's `--workers` shares one listening socket among its processes, and asyncio accepts
every pending connection at once when its socket is readable: the first process to wake
takes a whole burst (12 connections of 12, in 9 runs of 11 of bench/cluster.py), and the
others idle. Here N sockets are bound to the one port with SO_REUSEPORT, and the kernel
spreads the incoming connections over them; each process accepts on one. A process that
dies is replaced on the socket it left (the socket no live process holds), so no socket
goes unserved. Everything else (health checks, restarts, signals, graceful shutdown) is
uvicorn's `Multiprocess`.
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections import Counter
from typing import Any

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("uvicorn.error")


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """Return `count` sockets listening on one `host:port` (SO_REUSEPORT); port 0 takes a
    free port, the same for all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            # IPPROTO_TCP named, as uvicorn does: asyncio sets TCP_NODELAY on the accepted
            # connections only then (proto 0 left Nagle on: a 40 ms stall per answer).
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    log.info("Uvicorn running on http://%s:%d (%d processes)", host, port, count)
    return sockets


class Spread(Multiprocess):
    """uvicorn's `Multiprocess`, handing each process it starts the socket fewest live
    processes hold. It reads `self.sockets` once per process it starts, then starts that
    process and puts it in `self.processes` before it starts another: so at each read, a
    process in the list with no socket noted is the one the previous read was for."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.every = list(sockets)
        self.given: weakref.WeakKeyDictionary[Any, socket.socket] = weakref.WeakKeyDictionary()
        self.last: socket.socket | None = None
        super().__init__(config, sockets)

    @property
    def sockets(self) -> list[socket.socket]:
        held: Counter[int] = Counter()
        for process in self.processes:
            if process not in self.given and self.last is not None:
                self.given[process] = self.last
            if process in self.given and process.process.exitcode is None:  # running
                held[id(self.given[process])] += 1
        self.last = min(self.every, key=lambda sock: held[id(sock)])
        return [self.last]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        self.every = list(value)
