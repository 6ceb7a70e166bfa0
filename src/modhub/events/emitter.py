"""A worker's emit on PostgreSQL, committed from the event loop in one round trip.

An emit is the awaited call of a module's handler, so its cost is the handler's wait: a
thread hand-off, a pooled connection and a transaction's BEGIN, lock, INSERT and COMMIT
came to about 1.1 ms, where one statement in autocommit, sent from the loop on a
connection of its own, costs about a third of that. `LoopEmitter` keeps that connection
(opened with psycopg's asyncio API) and sends the publish statement, prepared, as one
implicit transaction: PostgreSQL answers after the commit, so the event is durable when
`emit` returns.

It drives the connection through libpq itself (psycopg's `pq` layer: `send_query_prepared`,
`consume_input`, `get_result`) and keeps a reader on its socket in the loop for as long as
it is open, so a wait is one future. psycopg's asyncio `execute` does the same work with a
fresh cursor, the connection's asyncio lock, its adapters for the six parameters, and a
reader added to and removed from the loop's selector on every wait: 0.14-0.21 ms of CPU an
emit on the machine of 2026-12-06, against 0.07-0.08 ms this way (docs/benchmarks.md). The
parameters are text, built by `events/publish.py`; an error answer is raised as psycopg
raises it (`psycopg.errors`, with its `diag`).

One emit at a time uses it: an emit that finds it busy, or that runs on another event loop
than the one that opened it, answers `None` and the caller takes the thread path (the same
statement in a pooled transaction). A connection that rested `ping_idle` seconds is pinged
first (a server restart meanwhile costs a reconnect, not an emit); one that failed, was
closed by the server, or whose emit was cancelled, is dropped and the next emit opens
another. A cancelled emit first cancels its statement on the server (it may be waiting for
its source's lock), so it commits nothing unless it had committed already.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import Any, NamedTuple

import psycopg
from psycopg import errors, pq

from modhub.cluster.notify import libpq_url

PING_IDLE = 1.0  # seconds the connection may rest before an emit pings it first
SEQ_TRIES = 5  # numberings of one emit when old nodes' emits keep taking its seq
CANCEL_TIMEOUT = 5.0  # seconds a cancelled emit waits for the server to take its cancel


class Statement(NamedTuple):
    """A statement the emitter prepares once per connection: its name there, and its SQL
    with positional parameters ($1, $2...), each sent as text."""

    name: bytes
    sql: bytes


class LoopEmitter:
    """Publishes events on PostgreSQL from the running event loop, one at a time."""

    def __init__(self, url: str) -> None:
        self.conninfo = libpq_url(url)
        self.ping_idle = PING_IDLE
        self._link: LoopConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._rested = 0.0
        self._lock = threading.Lock()

    @property
    def connection(self) -> psycopg.AsyncConnection[Any] | None:
        """The open connection, if any (its `info` names the server's backend)."""
        link = self._link
        return None if link is None else link.connection

    async def emit(self, statement: Statement, params: list[bytes]) -> tuple[int, int] | None:
        """Publish one event (`statement` answers its id and seq); return them once
        committed, or None when this emitter cannot take it now (busy, or another loop's)."""
        loop = asyncio.get_running_loop()
        with self._lock:  # loops of other threads may try at once (tests, benches)
            if self._busy:
                return None
            if self._loop is not loop:
                if self._loop is not None and not self._loop.is_closed():
                    return None
                self.close()  # a loop that ended opened it (a test's, say): this one takes over
                self._loop = loop
            self._busy = True
        try:
            link = await self._linked()
            try:
                return await _publish(link, statement, params)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and link.active():
                    await link.cancel()  # it may wait for a lock: stop it on the server
                if not link.idle():
                    self.close()  # not known to be idle: the next emit opens another
                raise
        finally:
            self._busy = False
            self._rested = time.monotonic()

    def close(self) -> None:
        """Close the connection (from any thread: nothing of the loop is awaited)."""
        link, self._link = self._link, None
        if link is not None:
            link.close()

    async def _linked(self) -> LoopConnection:
        link = self._link
        if link is not None and not link.idle():
            self.close()  # the server closed it while it rested
            link = None
        if link is not None and time.monotonic() - self._rested >= self.ping_idle:
            try:
                await link.ping()
            except psycopg.Error:
                self.close()
                link = None
        if link is None:
            name = f"modhub-emitter-{os.getpid()}"
            link = self._link = await LoopConnection.open(self.conninfo, name)
        return link


class LoopConnection:
    """The emitter's connection, driven through libpq from the loop that opened it. The
    loop watches its socket while it is open: a wait is a future that the reader ends.
    (bench/events.py sends its bare INSERT through one, to compare like with like.)"""

    @classmethod
    async def open(cls, conninfo: str, application_name: str) -> LoopConnection:
        """Connect, in autocommit, from the running loop."""
        connection = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, client_encoding="utf8", application_name=application_name
        )
        return cls(connection, asyncio.get_running_loop())

    def __init__(self, connection: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop):
        self.connection = connection
        self.pgconn = connection.pgconn
        self.loop = loop
        self.fd = self.pgconn.socket
        self.prepared: set[bytes] = set()
        self.broken = False  # the server closed it while nothing was awaited
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(self.fd, self._readable)

    def idle(self) -> bool:
        """Open, and no statement in flight or transaction left open."""
        return (
            not self.broken
            and self.pgconn.status == pq.ConnStatus.OK
            and self.pgconn.transaction_status == pq.TransactionStatus.IDLE
        )

    def active(self) -> bool:
        """A statement is in flight."""
        return not self.broken and self.pgconn.transaction_status == pq.TransactionStatus.ACTIVE

    async def run(self, statement: Statement, params: list[bytes]) -> pq.abc.PGresult:
        """Prepare `statement` on first use, run it with `params`; return its result or
        raise its error."""
        if statement.name not in self.prepared:
            self.pgconn.send_prepare(statement.name, statement.sql)
            await self._answer()
            self.prepared.add(statement.name)
        self.pgconn.send_query_prepared(statement.name, params)
        return await self._answer()

    async def ping(self) -> None:
        self.pgconn.send_query(b"SELECT 1")
        await self._answer()

    async def cancel(self) -> None:
        """Ask the server to cancel the statement in flight."""
        with contextlib.suppress(psycopg.Error):  # it is dropped after this either way
            await self.connection.cancel_safe(timeout=CANCEL_TIMEOUT)

    def close(self) -> None:
        """Stop watching the socket and close the connection, on the loop when it runs in
        another thread (its selector is not thread-safe)."""
        loop = self.loop
        if not loop.is_closed() and loop.is_running() and running_loop() is not loop:
            try:
                loop.call_soon_threadsafe(self._close)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._close()

    def _close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
        self.pgconn.finish()
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # an emit in flight fails, not hangs
            waiter.set_exception(psycopg.OperationalError("the emitter's connection was closed"))

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _readable(self) -> None:
        if self._waiter is not None:
            self._ready()
            return
        try:  # nothing awaited: a notice, or the server closing the connection
            self.pgconn.consume_input()
        except psycopg.OperationalError:
            self.broken = True
            self.loop.remove_reader(self.fd)

    async def _answer(self) -> pq.abc.PGresult:
        """Wait for the statement sent to be answered; return its last result."""
        pgconn = self.pgconn
        while pgconn.flush():  # a large payload: the socket took part of it
            await self._wait(writing=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            await self._wait()
            pgconn.consume_input()
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        for result in results:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise errors.error_from_result(result)
        if not results:  # pragma: no cover - libpq answers every statement sent
            raise psycopg.OperationalError("the server answered nothing")
        return results[-1]

    async def _wait(self, writing: bool = False) -> None:
        """Wait until the socket is readable (the loop's reader ends the wait), or also
        writable; `_close` ends it with an error."""
        waiter = self._waiter = self.loop.create_future()
        if writing:
            self.loop.add_writer(self.fd, self._ready)
        try:
            await waiter
        finally:
            self._waiter = None
            if writing and not self.loop.is_closed():
                self.loop.remove_writer(self.fd)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the calling thread, or None in a thread with no loop running."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _publish(
    link: LoopConnection, statement: Statement, params: list[bytes]
) -> tuple[int, int]:
    """Run the publish statement; number again when its seq was taken meanwhile (an old
    node's emit committed between this statement's snapshot and its lock: migration 0010)."""
    for tries in range(1, SEQ_TRIES + 1):
        try:
            result = await link.run(statement, params)
        except errors.UniqueViolation as exc:
            if exc.diag.table_name != "events" or tries == SEQ_TRIES:
                raise
            continue
        event_id, seq = result.get_value(0, 0), result.get_value(0, 1)
        if event_id is None or seq is None:  # pragma: no cover - the INSERT returns its row
            raise RuntimeError("the emit returned no event")
        return int(event_id), int(seq)
    raise AssertionError("unreachable")  # pragma: no cover
