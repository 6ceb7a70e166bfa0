"""Engines and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL in production."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    """Return an engine for `url`, with SQLite set up for concurrent use."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=20,  # the API's thread pool runs up to 40 requests at once
            max_overflow=20,
        )
        _setup_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    _ping_when_idle(engine)
    return engine


# PostgreSQL connections kept in the pool, and opened beyond them at peaks (closed on their
# return); opened on demand, so a process holds as many as it used at once, up to the size.
# The size is above the requests a process usually serves at once: a connection opened and
# closed per request starts a server backend each time and plans each statement anew
# (psycopg prepares a statement at its 5th use on a connection; the module detail's plan
# cost the server ~1.4 ms, its prepared execution ~0.2 ms).
POOL_SIZE = 20
POOL_OVERFLOW = 20  # with the size: the API's thread pool (40 threads)


PING_IDLE = 1.0  # seconds a pooled connection may rest before it is pinged on checkout


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout only after it rested `PING_IDLE` seconds.

    `pool_pre_ping` pings on every checkout: a round trip that cost a fifth of a module
    detail request under load. A connection used a moment ago is alive but for a server
    restart in that moment; then its error marks the whole pool stale (SQLAlchemy's
    disconnect handling), so the next checkouts reconnect.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["rested"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        rested = record.info.get("rested")
        if rested is None or time.monotonic() - rested < PING_IDLE:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(str(exc)) from exc  # the pool retries with a new one


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A writer takes the lock up front, so two writers queue on busy_timeout
        # instead of one failing when it upgrades a read lock.
        immediate = connection.get_execution_options().get("immediate", False)
        # Straight to the driver: through `exec_driver_sql` this one statement cost 7 % of
        # a module list request (SQLAlchemy's execution pipeline runs for it).
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engine and the two ways to use it: `read()` and `write()` sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.embedded = url.startswith("sqlite")  # in-process: no network between us and it
        self.engine = make_engine(url)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(immediate=True), expire_on_commit=False
        )
        # PostgreSQL reads without BEGIN and ROLLBACK: two round trips fewer a connection.
        self._query = (
            self.engine
            if self.embedded
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def dialect(self) -> str:
        """Return `sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Yield a session for reading; nothing it does is committed.

        Closing the session rolls its transaction back and leaves loaded objects readable.
        """
        with self._read() as session:
            yield session

    @contextmanager
    def query(self) -> Iterator[Connection]:
        """Yield a connection for Core reads; nothing is committed, nothing is locked.

        For the hot read paths (authentication, the module list and detail): a plain
        connection costs about half what a session does for a statement. On SQLite the
        reads share one transaction; on PostgreSQL each statement runs on its own
        (autocommit: no BEGIN and ROLLBACK round trips), which under READ COMMITTED sees
        what a transaction would, statement by statement. Never take a lock in it.
        """
        with self._query.connect() as connection:
            yield connection

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Yield a session in one transaction: committed on success, rolled back on error."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
