"""How the store's writes reach the database: one at a time, or grouped (SQLite).

SQLite has one writer at a time, whatever the threads: writes from many threads queue on
its lock, and a waiting writer sleeps in its busy handler. So on SQLite the store's writes
go to one thread of their own, which runs every write waiting when it gets to them in one
transaction (group commit), each in a savepoint: a write that fails (a stale `if_version`,
the quota) rolls back alone, and no write is answered before its transaction commits. On
PostgreSQL each write is its own transaction in a thread (writers of different modules run
at once; one module's are ordered by its usage row).

An awaited write on SQLite is first tried on the event loop itself (`LoopWrites`), in a
transaction of its own on a connection that never waits: when SQLite's write lock is free
a small write costs less there than the two thread hand-offs. When the lock is held (the
writer thread, another process) or the write is not small (`Offload`: a large value, a
quota purge), it goes to the writer thread instead, before anything of it is kept. That
connection never checkpoints the WAL on commit; the writer thread does, every
`CHECKPOINT_EVERY` writes done on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import StaticPool

log = logging.getLogger("modhub.store")
T = TypeVar("T")
Write = Callable[[Connection], T]

MAX_GROUP = 256  # writes in one transaction at most
IDLE_SECONDS = 10.0  # the group writer's thread ends after this long without work
CHECKPOINT_EVERY = 200  # writes done on the loop between two WAL checkpoints (PASSIVE)
LARGEST_INLINE = 64 * 1024  # characters of JSON written or decoded on the loop at most


_STOP: Any = object()  # queued by `GroupWrites.close`
_CHECKPOINT: Any = object()  # queued by `GroupWrites.arun` after writes on the loop


class Offload(Exception):
    """Raised by a write run on the loop that must run in the writer thread instead (its
    transaction is rolled back first; nothing of it is kept)."""


def on_loop(connection: Connection) -> bool:
    """Whether `connection` is the loop's own (`LoopWrites`): a write checks it before
    anything costly and raises `Offload` then."""
    return bool(connection.info.get("on_loop", False))


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

    def __init__(self, engine: Engine, on_loop: LoopWrites | None = None) -> None:
        super().__init__(engine)
        self.on_loop = on_loop
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
        self._put((write, future))
        return future

    def run(self, write: Write[T]) -> T:
        return self.submit(write).result()

    async def arun(self, write: Write[T]) -> T:
        if self.on_loop is not None:
            done, result = self.on_loop.run(write)
            if self.on_loop.commits >= CHECKPOINT_EVERY:
                self.on_loop.commits = 0
                self._put(_CHECKPOINT)
            if done:
                return cast(T, result)
        return await asyncio.wrap_future(self.submit(write))

    def _put(self, item: Any) -> None:
        with self._lock:  # the thread only ends under this lock, with the queue empty
            self._queue.put(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="modhub-store-writer", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Finish the writes queued, end the thread and close its connections."""
        with self._lock:
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join()
        if self.on_loop is not None:
            self.on_loop.close()

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
            group = [] if first is _CHECKPOINT else [first]
            stop, checkpoint = False, first is _CHECKPOINT
            with contextlib.suppress(queue.Empty):
                while len(group) < MAX_GROUP:
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    if item is _CHECKPOINT:
                        checkpoint = True
                        continue
                    group.append(item)
            if group:
                self._commit([item for item in group if item[1].set_running_or_notify_cancel()])
            if checkpoint:
                self._checkpoint()
            if stop:
                self._queue.put(_STOP)  # after this group: the next turn ends the thread

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database as far as readers allow (PASSIVE: it takes
        no lock that a writer waits for), outside any transaction."""
        try:
            if self._connection is None:
                self._connection = self.engine.connect()
            raw = self._connection.connection.driver_connection
            cast(sqlite3.Connection, raw).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:
            log.exception("a WAL checkpoint of the store failed")
            self._close()

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


class LoopWrites:
    """Writes run on the event loop, each in a transaction of its own, on a connection of
    their own that never waits (busy timeout 0) and never checkpoints on commit. `run`
    answers (False, None) when the write must go to the writer thread instead: the write
    lock is held elsewhere, the write raised `Offload`, or another thread is using this
    connection; in each case its transaction was rolled back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.commits = 0  # since the last checkpoint was asked for
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._busy = threading.Lock()  # one loop at a time; another thread offloads

    def _connect(self) -> sqlite3.Connection:
        raw = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        for pragma in ("foreign_keys=ON", "synchronous=NORMAL", "wal_autocheckpoint=0"):
            raw.execute(f"PRAGMA {pragma}")
        return raw

    def run(self, write: Write[T]) -> tuple[bool, T | None]:
        """Run `write` now in its own transaction: (True, its result), or (False, None)."""
        if not self._busy.acquire(blocking=False):
            return False, None
        try:
            return self._run(write)
        finally:
            self._busy.release()

    def _run(self, write: Write[T]) -> tuple[bool, T | None]:
        if self._connection is None:
            self._engine = create_engine("sqlite://", creator=self._connect, poolclass=StaticPool)
            self._connection = self._engine.connect()
            self._connection.info["on_loop"] = True
        connection = self._connection
        raw = cast(sqlite3.Connection, connection.connection.driver_connection)
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # the write lock is held elsewhere
            return False, None
        try:
            result = write(connection)
            raw.execute("COMMIT")
        except BaseException as exc:
            try:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
            except Exception:
                self._drop()  # in doubt: not used again
                raise exc from None
            if isinstance(exc, Offload) or _busy(exc):
                return False, None
            raise
        self.commits += 1
        return True, result

    def close(self) -> None:
        """Close the connection (a later write opens a new one)."""
        with self._busy:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "locked" or "busy" (the write can be tried again)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )
