"""Fixtures of the database tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modhub.db import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """Yield a database on an empty (never migrated) SQLite or PostgreSQL database."""
    database = Database(database_url)
    yield database
    database.dispose()
