"""PostgreSQL's pooled connections are pinged on checkout only after resting `PING_IDLE`
seconds (SQLite has no server to lose): a connection the server dropped meanwhile is
replaced, not handed to a request."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from modhub.db import Database, database

PID = text("SELECT pg_backend_pid()")


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    found = Database(postgres_url)
    yield found
    found.dispose()


def kill_pooled(db: Database, url: str) -> int:
    """Check a connection out and in, have the server end it; return its backend pid."""
    with db.query() as connection:
        pid = int(connection.scalar(PID) or 0)
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    return pid


def test_a_rested_connection_the_server_dropped_is_replaced(
    db: Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_IDLE", 0.0)  # every pooled connection has rested
    killed = kill_pooled(db, postgres_url)
    with db.query() as connection:
        assert connection.scalar(PID) != killed


def test_a_connection_used_a_moment_ago_is_not_pinged(
    db: Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_IDLE", 3600.0)  # no connection has rested enough
    kill_pooled(db, postgres_url)
    with pytest.raises(OperationalError), db.query() as connection:
        connection.scalar(PID)  # the dead one, unpinged: its error marks the pool stale
    with db.query() as connection:  # so the next checkout reconnects
        assert connection.scalar(PID)
