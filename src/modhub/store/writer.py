"""How the store's writes reach the database: one at a time, or grouped (SQLite).

SQLite has one writer at a time, whatever the threads: writes from many threads queue on
its lock, and a waiting writer sleeps in its busy handler. So on SQLite the store's writes
go to one thread of their own, which runs every write waiting when it gets to them in one
transaction (group commit), each in a savepoint: a write that fails (a stale `if_version`,
the quota) rolls back alone, and no write is answered before its transaction commits. On
PostgreSQL each write is its own transaction in a thread (writers of different modules run
at once; one module's are ordered by its usage row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

log = logging.getLogger("modhub.store")
T = TypeVar("T")
Write = Callable[[Connection], T]

MAX_GROUP = 256  # writes in one transaction at most
IDLE_SECONDS = 10.0  # the group writer's thread ends after this long without work


_STOP: Any = object()  # queued by `GroupWrites.close`


class Writes:
    """Each write its own transaction, in the calling thread (or a thread, for `arun`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, write: Write[T]) -> T:
        """Run `write` in a transaction of its own and return its result."""
        with self.engine.begin() as connection:
            return write(connection)

    async def arun(self, write: Write[T]) -> T:
        """`run`, off the event loop."""
        return await asyncio.to_thread(self.run, write)

    def close(self) -> None:
        """Release what the writes hold (nothing here)."""


class GroupWrites(Writes):
    """Writes run by one thread, as many as are waiting in one transaction."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._queue: queue.SimpleQueue[tuple[Write[Any], Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None  # the thread's own, while it lives

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def submit(self, write: Write[T]) -> Future[T]:
        """Queue `write`; return the future of its result, set once its transaction commits."""
        future: Future[T] = Future()
        with self._lock:  # the thread only ends under this lock, with the queue empty
            self._queue.put((write, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="modhub-store-writer", daemon=True
                )
                self._thread.start()
        return future

    def run(self, write: Write[T]) -> T:
        return self.submit(write).result()

    async def arun(self, write: Write[T]) -> T:
        return await asyncio.wrap_future(self.submit(write))

    def close(self) -> None:
        """Finish the writes queued, end the thread and close its connection."""
        with self._lock:
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join()

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
                if first is _STOP:
                    with self._lock:
                        self._thread = None
                    self._close()
                    return
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        self._close()
                        return
                continue
            group = [first]
            stop = False
            with contextlib.suppress(queue.Empty):
                while len(group) < MAX_GROUP:
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    group.append(item)
            self._commit([item for item in group if item[1].set_running_or_notify_cancel()])
            if stop:
                self._queue.put(_STOP)  # after this group: the next turn ends the thread

    def _commit(self, group: list[tuple[Write[Any], Future[Any]]]) -> None:
        """Run `group` in one transaction; answer each write after the commit."""
        answers: list[tuple[Future[Any], bool, Any]] = []
        try:
            if self._connection is None:  # kept while the thread lives: no pool round trip
                self._connection = self.engine.connect()
            connection = self._connection
            with connection.begin() as transaction:
                if len(group) == 1:  # no savepoint needed: a failure rolls the whole back
                    write, future = group[0]
                    try:
                        answers.append((future, True, write(connection)))
                    except Exception as exc:
                        transaction.rollback()
                        answers.append((future, False, exc))
                else:
                    for write, future in group:
                        # Plain SAVEPOINT statements: begin_nested() compiles its own each
                        # time, which cost as much as the write itself.
                        connection.exec_driver_sql("SAVEPOINT write")
                        try:
                            answers.append((future, True, write(connection)))
                        except Exception as exc:
                            connection.exec_driver_sql("ROLLBACK TO SAVEPOINT write")
                            answers.append((future, False, exc))
                        connection.exec_driver_sql("RELEASE SAVEPOINT write")
        except Exception as exc:  # BEGIN or COMMIT failed: nothing was written
            self._close()  # a connection in any doubt is not used again
            for _, future in group:
                future.set_exception(exc)
            return
        for future, ok, value in answers:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
