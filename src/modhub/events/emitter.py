"""A worker's emit on PostgreSQL, committed from the event loop in one round trip.

An emit is the awaited call of a module's handler, so its cost is the handler's wait: a
thread hand-off, a pooled connection and a transaction's BEGIN, lock, INSERT and COMMIT
came to about 1.1 ms, where one statement in autocommit, sent from the loop on a
connection of its own, costs about a third of that. `LoopEmitter` keeps that one
connection (psycopg's asyncio connection, so the loop never waits on a socket) and sends
the publish statement, prepared, as one implicit transaction: PostgreSQL answers after
the commit, so the event is durable when `emit` returns, as before.

One emit at a time uses it: an emit that finds it busy, or that runs on another event loop
than the one that opened it, answers `None` and the caller takes the thread path (the same
statement in a pooled transaction). A connection that rested `ping_idle` seconds is pinged
first (a server restart meanwhile costs a reconnect, not an emit); one that failed, or
whose emit was cancelled and is not idle again (psycopg cancels the query on the server),
is dropped and the next emit opens another.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from modhub.cluster.notify import libpq_url

PING_IDLE = 1.0  # seconds the connection may rest before an emit pings it first
IDLE = TransactionStatus.IDLE
SEQ_TRIES = 5  # numberings of one emit when old nodes' emits keep taking its seq


class LoopEmitter:
    """Publishes events on PostgreSQL from the running event loop, one at a time."""

    def __init__(self, url: str) -> None:
        self.conninfo = libpq_url(url)
        self.ping_idle = PING_IDLE
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._rested = 0.0
        self._lock = threading.Lock()

    async def emit(self, statement: str, params: dict[str, Any]) -> tuple[int, int] | None:
        """Publish one event (`statement`, with psycopg's placeholders, answers its id and
        seq); return them once committed, or None when this emitter cannot take it now
        (busy, or another loop's)."""
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
            connection = await self._connected()
            try:
                return await _publish(connection, statement, params)
            except BaseException:  # an error, or the emit cancelled (psycopg cancels its query)
                if connection.closed or connection.info.transaction_status != IDLE:
                    self.close()  # not known to be idle: the next emit opens another
                raise
        finally:
            self._busy = False
            self._rested = time.monotonic()

    def close(self) -> None:
        """Close the connection (from any thread: nothing of the loop is awaited)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.pgconn.finish()

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        connection = self._connection
        if connection is not None and time.monotonic() - self._rested >= self.ping_idle:
            try:
                await connection.execute("SELECT 1")
            except psycopg.Error:
                self.close()
                connection = None
        if connection is None:
            connection = await psycopg.AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                prepare_threshold=0,
                application_name=f"modhub-emitter-{os.getpid()}",
            )
            self._connection = connection
        return connection


async def _publish(
    connection: psycopg.AsyncConnection[Any], statement: str, params: dict[str, Any]
) -> tuple[int, int]:
    """Run the publish statement; number again when its seq was taken meanwhile (an old
    node's emit committed between this statement's snapshot and its lock: migration 0010)."""
    for tries in range(1, SEQ_TRIES + 1):
        try:
            cursor = await connection.execute(statement, params, prepare=True)
        except errors.UniqueViolation as exc:
            if exc.diag.table_name != "events" or tries == SEQ_TRIES:
                raise
            continue
        found = await cursor.fetchone()
        if found is None:  # pragma: no cover - the INSERT returns its row or raises
            raise RuntimeError("the emit returned no event")
        return int(found[0]), int(found[1])
    raise AssertionError("unreachable")  # pragma: no cover
