"""The store's fixtures: a migrated database (SQLite and PostgreSQL), a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from modhub.db import Database, upgrade
from modhub.store import ModuleStore

QUOTA = 64 * 1024 * 1024


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Database, clock: Clock) -> Iterator[ModuleStore]:
    store = ModuleStore(db, clock)
    yield store
    store.close()
