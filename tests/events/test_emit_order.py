"""An emit's seq among its source's events follows the order the emits commit in, however
many emit at once (PostgreSQL: the source's lock, held until the emit's implicit commit;
SQLite: its one writer), beside a publish in a transaction of its own (SQLite and
PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from modhub.db import Database, upgrade
from modhub.db.models import Event, EventDelivery
from modhub.events.store import EventStore


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    db = Database(database_url)
    if db.dialect == "sqlite":
        upgrade(db.engine)
    yield EventStore(db)
    db.dispose()


def _events(store: EventStore, source: str) -> list[tuple[int, int, int]]:
    """(id, seq, n) of `source`'s events, by id."""
    with store.db.read() as session:
        rows = session.execute(
            select(Event.id, Event.seq, Event.payload)
            .where(Event.source == source)
            .order_by(Event.id)
        )
        return [(i, s, p["n"]) for i, s, p in rows]


def test_concurrent_emits_of_one_source_get_unbroken_seqs_in_their_order(
    store: EventStore,
) -> None:
    now = datetime.now(UTC)

    def emits(worker: int) -> list[int]:
        return [
            store.emit("src", "tick", f'{{"n":{worker * 100 + k}}}', ["sub-a", "sub-b"], now)[1]
            for k in range(25)
        ]

    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(emits, range(4)))
    for seqs in answered:  # each thread's emits, one after another: increasing seqs
        assert seqs == sorted(seqs)
    found = _events(store, "src")
    # ids are taken after the source's lock too: id order is seq order, with no gap
    assert [s for _, s, _ in found] == list(range(1, 101))
    assert sorted(s for seqs in answered for s in seqs) == list(range(1, 101))
    with store.db.read() as session:
        rows = session.execute(
            select(EventDelivery.subscriber, EventDelivery.seq, Event.seq).join(
                Event, Event.id == EventDelivery.event_id
            )
        ).all()
    assert len(rows) == 200
    assert all(d == e for _, d, e in rows)


def _waiting_for_a_lock(store: EventStore) -> bool:
    """Whether a session of this database waits for a lock (PostgreSQL)."""
    with store.db.query() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'advisory'")
        ).scalar_one()
    return bool(found)


def test_an_emit_waits_for_an_uncommitted_publish_of_its_source_and_follows_it(
    store: EventStore,
) -> None:
    now = datetime.now(UTC)
    other = store.emit("other", "tick", '{"n":0}', ["sub"], now)
    with store.db.write() as session:  # a publish in a transaction (another node, say)
        first = store.publish(session, "src", "tick", {"n": 1}, ["sub"], now)
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(store.emit, "src", "tick", '{"n":2}', ["sub"], now)
            if store.db.dialect == "postgresql":  # it waits for the source's lock
                deadline = time.monotonic() + 20
                while not _waiting_for_a_lock(store):
                    assert time.monotonic() < deadline, "the emit never waited for the lock"
                    assert not second.done()
            assert not second.done()
            session.commit()
            event_id, seq = second.result(timeout=30)
    assert (first[1], seq) == (1, 2)
    assert event_id > first[0] > other[0]
    assert [(s, n) for _, s, n in _events(store, "src")] == [(1, 1), (2, 2)]
