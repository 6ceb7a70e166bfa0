"""Migration 0010: each source's last event seq in `event_seqs`, from a database that holds
events, and emits that number on from there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text

from modhub.db import Database, upgrade
from modhub.db.migrate import alembic_config
from modhub.events.store import EventStore

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def insert_event(db: Database, source: str, seq: int) -> None:
    """Insert an event as a server at revision 0009 did."""
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO events (source, name, seq, payload, emitted_at)"
                " VALUES (:source, 'tick', :seq, '{}', :now)"
            ),
            {"source": source, "seq": seq, "now": NOW},
        )


def test_0010_keeps_each_sources_last_seq_and_emits_go_on_from_it(db: Database) -> None:
    upgrade(db.engine, "0009")
    for source, seq in [("a", 1), ("a", 2), ("a", 7), ("b", 3)]:
        insert_event(db, source, seq)

    upgrade(db.engine)

    with db.engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT source, seq FROM event_seqs")).all())
    assert rows == {"a": 7, "b": 3}
    indexes = {i["name"] for i in inspect(db.engine).get_indexes("events")}
    assert "ix_events_source" not in indexes  # (source, seq) serves it
    store = EventStore(db)
    try:
        found = asyncio.run(store.aemit("a", "tick", "{}", ["s"], NOW))
        assert found[1] == 8
        assert asyncio.run(store.aemit("c", "tick", "{}", [], NOW))[1] == 1
    finally:
        store.close()


def test_0010_downgrades(db: Database) -> None:
    upgrade(db.engine)
    command.downgrade(alembic_config(db.engine), "0009")
    tables = inspect(db.engine)
    assert "event_seqs" not in tables.get_table_names()
    assert "ix_events_source" in {i["name"] for i in tables.get_indexes("events")}
