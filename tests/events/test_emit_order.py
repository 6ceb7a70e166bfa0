"""An emit's seq among its source's events follows the order the emits commit in, however
many emit at once and by whichever path (on PostgreSQL: the loop's one statement, or a
pooled transaction when the emitter is busy), beside a publish in a transaction of its
own and beside nodes from before migration 0010 (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, select, text

from modhub.db import Database, upgrade
from modhub.db.models import Event, EventDelivery
from modhub.events.publish import SEQ_LOCK
from modhub.events.store import EventStore
from modhub.jobs.claim import module_key

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def _store(url: str) -> Iterator[EventStore]:
    db = Database(url)
    upgrade(db.engine)
    events = EventStore(db)
    yield events
    events.close()
    db.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    yield from _store(database_url)


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[EventStore]:
    """PostgreSQL only: several nodes, and the loop's emitter."""
    yield from _store(postgres_url)


def emit(store: EventStore, n: int, source: str = "src") -> tuple[int, int]:
    """Emit event `n` of `source` as a worker's emit reaches the store, on a loop of its own."""
    return asyncio.run(store.aemit(source, "tick", f'{{"n":{n}}}', ["sub-a", "sub-b"], NOW))


def seqs(store: EventStore, source: str = "src") -> list[tuple[int, int]]:
    """(seq, n) of `source`'s events, by id."""
    with store.db.read() as session:
        rows = session.execute(
            select(Event.seq, Event.payload).where(Event.source == source).order_by(Event.id)
        )
        return [(seq, payload["n"]) for seq, payload in rows]


def test_concurrent_emits_of_one_source_get_unbroken_seqs_in_commit_order(
    store: EventStore,
) -> None:
    def emits(worker: int) -> list[int]:
        return [emit(store, worker * 100 + k)[1] for k in range(20)]

    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(emits, range(4)))
    for one_thread in answered:  # each thread's emits, one after another
        assert one_thread == sorted(one_thread)
    # id order is seq order (ids are drawn after the source's row is locked), with no gap
    assert [seq for seq, _ in seqs(store)] == list(range(1, 81))
    with store.db.read() as session:
        rows = session.execute(
            select(EventDelivery.seq, Event.seq).join(Event, Event.id == EventDelivery.event_id)
        ).all()
    assert len(rows) == 160
    assert all(delivery == event for delivery, event in rows)


def test_emits_at_once_on_one_loop_all_commit_in_order(store: EventStore) -> None:
    """The loop's emitter takes one emit at a time; the others go through the writer."""

    async def burst() -> list[tuple[int, int]]:
        return await asyncio.gather(
            *(store.aemit("src", "tick", f'{{"n":{n}}}', ["sub"], NOW) for n in range(10))
        )

    answered = asyncio.run(burst())
    assert sorted(seq for _, seq in answered) == list(range(1, 11))
    assert [seq for seq, _ in seqs(store)] == list(range(1, 11))


def test_seqs_go_on_after_the_events_are_pruned(store: EventStore) -> None:
    """A source's numbering never starts again: a subscriber's order holds across prunes."""
    for n in range(3):
        emit(store, n)
    assert store.prune(datetime(2100, 1, 1, tzinfo=UTC)) >= 3
    assert emit(store, 3)[1] == 4


def _waits_for_a_lock(db: Database) -> bool:
    with db.query() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'advisory'")
        ).scalar_one()
    return bool(found)


def _until_waiting(db: Database, emitting: Future[Any]) -> None:
    """Return once `emitting` waits for the source's advisory lock (PostgreSQL)."""
    deadline = time.monotonic() + 30
    while not _waits_for_a_lock(db):
        assert time.monotonic() < deadline, "the emit never waited for the source's lock"
        assert not emitting.done(), emitting.result()
        time.sleep(0.01)


def test_an_emit_waits_for_an_uncommitted_publish_of_its_source_and_follows_it(
    store: EventStore,
) -> None:
    other = emit(store, 0, source="other")
    with store.db.write() as session:  # a publish in a transaction (a registry change)
        first = store.publish(session, "src", "tick", {"n": 1}, ["sub"], NOW)
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(emit, store, 2)
            if store.db.dialect == "postgresql":
                _until_waiting(store.db, second)
            assert not second.done()
            session.commit()
            event_id, seq = second.result(timeout=30)
    assert (first[1], seq) == (1, 2)
    assert event_id > first[0] > other[0]
    assert seqs(store) == [(1, 1), (2, 2)]


# -- beside nodes from before migration 0010 (PostgreSQL: only it runs several nodes) --------


def _old_node_publish(connection: Connection, n: int) -> None:
    """Publish as a node on migration 0009 does: the source's lock, then `max(seq) + 1`,
    with no `event_seqs` row touched."""
    connection.execute(text(f"SELECT pg_advisory_xact_lock({SEQ_LOCK}, {module_key('src')})"))
    connection.execute(
        text(
            "INSERT INTO events (source, name, seq, payload, emitted_at) SELECT 'src', 'tick',"
            " coalesce(max(seq), 0) + 1, CAST(:payload AS json), :now FROM events"
            " WHERE source = 'src'"
        ),
        {"payload": f'{{"n":{n}}}', "now": NOW},
    )


def test_an_emit_numbers_after_an_old_nodes_events(pg_store: EventStore) -> None:
    emit(pg_store, 1)
    with pg_store.db.engine.begin() as connection:
        _old_node_publish(connection, 2)
        _old_node_publish(connection, 3)
    assert emit(pg_store, 4)[1] == 4
    assert seqs(pg_store) == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_an_emit_numbers_again_when_an_old_node_took_its_seq(pg_store: EventStore) -> None:
    """The emit's statement read `max(seq)` before it waited for the lock an old node held;
    that node's event takes the seq, and the emit numbers again after it."""
    emit(pg_store, 1)
    with ThreadPoolExecutor(1) as pool, pg_store.db.engine.begin() as connection:
        connection.execute(text(f"SELECT pg_advisory_xact_lock({SEQ_LOCK}, {module_key('src')})"))
        emitting = pool.submit(emit, pg_store, 3)
        _until_waiting(pg_store.db, emitting)
        _old_node_publish(connection, 2)
        connection.commit()
        _event_id, seq = emitting.result(timeout=30)
    assert seq == 3
    assert seqs(pg_store) == [(1, 1), (2, 2), (3, 3)]


# -- the emitter's connection (PostgreSQL) ----------------------------------------------------


def _backend(store: EventStore) -> int:
    assert store.emitter is not None
    assert store.emitter.connection is not None
    return int(store.emitter.connection.info.backend_pid)


def _terminate(store: EventStore, pid: int) -> None:
    with store.db.query() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_a_connection_lost_while_resting_is_replaced_before_the_emit(pg_store: EventStore) -> None:

    async def main() -> None:
        await pg_store.aemit("src", "tick", '{"n":1}', ["sub"], NOW)
        first = _backend(pg_store)
        _terminate(pg_store, first)
        assert pg_store.emitter is not None
        pg_store.emitter.ping_idle = 0  # it rested long enough to be pinged
        assert (await pg_store.aemit("src", "tick", '{"n":2}', ["sub"], NOW))[1] == 2
        assert _backend(pg_store) != first

    asyncio.run(main())


def test_a_connection_lost_in_use_fails_that_emit_and_the_next_one_reconnects(
    pg_store: EventStore,
) -> None:

    async def main() -> None:
        await pg_store.aemit("src", "tick", '{"n":1}', ["sub"], NOW)
        _terminate(pg_store, _backend(pg_store))
        with pytest.raises(psycopg.OperationalError):
            await pg_store.aemit("src", "tick", '{"n":2}', ["sub"], NOW)
        assert (await pg_store.aemit("src", "tick", '{"n":3}', ["sub"], NOW))[1] == 2

    asyncio.run(main())
    assert seqs(pg_store) == [(1, 1), (2, 3)]


async def _second_emit_waiting_for_the_lock(
    store: EventStore, connection: Connection
) -> asyncio.Task[tuple[int, int]]:
    """Emit event 1 of "src", take the source's lock on `connection` (as an old node's
    transaction holds it), and return event 2's emit once it waits for that lock."""
    await store.aemit("src", "tick", '{"n":1}', ["sub"], NOW)
    connection.execute(text(f"SELECT pg_advisory_xact_lock({SEQ_LOCK}, {module_key('src')})"))
    waiting = asyncio.create_task(store.aemit("src", "tick", '{"n":2}', ["sub"], NOW))
    while not await asyncio.to_thread(_waits_for_a_lock, store.db):
        assert not waiting.done()
        await asyncio.sleep(0.01)
    return waiting


def test_a_cancelled_emit_commits_nothing_and_the_next_one_goes_on(pg_store: EventStore) -> None:

    async def main(connection: Connection) -> None:
        waiting = await _second_emit_waiting_for_the_lock(pg_store, connection)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        connection.rollback()  # the lock is free again
        assert (await pg_store.aemit("src", "tick", '{"n":3}', ["sub"], NOW))[1] == 2

    with pg_store.db.engine.connect() as connection:
        asyncio.run(main(connection))
    assert seqs(pg_store) == [(1, 1), (2, 3)]


def test_the_emitters_connection_is_named_in_pg_stat_activity(pg_store: EventStore) -> None:
    asyncio.run(pg_store.aemit("src", "tick", '{"n":1}', ["sub"], NOW))
    with pg_store.db.query() as connection:
        name = connection.execute(
            text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": _backend(pg_store)},
        ).scalar_one()
    assert name == f"modhub-emitter-{os.getpid()}"


def test_a_connection_the_server_closed_at_rest_is_noticed_and_replaced(
    pg_store: EventStore,
) -> None:
    """The loop watches the emitter's socket: a connection the server closed is known
    broken before the next emit, which opens another instead of failing (no ping needed)."""

    async def main() -> None:
        await pg_store.aemit("src", "tick", '{"n":1}', ["sub"], NOW)
        first = _backend(pg_store)
        _terminate(pg_store, first)
        assert pg_store.emitter is not None
        connection = pg_store.emitter.connection
        assert connection is not None
        deadline = time.monotonic() + 30
        while not connection.closed:
            assert time.monotonic() < deadline, "the emitter never saw its connection close"
            await asyncio.sleep(0.01)
        assert (await pg_store.aemit("src", "tick", '{"n":2}', ["sub"], NOW))[1] == 2
        assert _backend(pg_store) != first

    asyncio.run(main())


def test_closing_the_emitter_from_another_thread_while_its_loop_runs(
    pg_store: EventStore,
) -> None:
    async def main() -> None:
        await pg_store.aemit("src", "tick", '{"n":1}', ["sub"], NOW)
        first = _backend(pg_store)
        assert pg_store.emitter is not None
        await asyncio.to_thread(pg_store.emitter.close)
        assert (await pg_store.aemit("src", "tick", '{"n":2}', ["sub"], NOW))[1] == 2
        assert _backend(pg_store) != first

    asyncio.run(main())
    with pg_store.db.query() as connection:
        names = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"modhub-emitter-{os.getpid()}"},
        ).scalar_one()
    assert names <= 1  # the first connection was closed, not left open


def test_closing_the_emitter_under_an_emit_in_flight_fails_that_emit(
    pg_store: EventStore,
) -> None:
    """The emit waits for its source's lock when the emitter is closed from another thread:
    it raises at once instead of waiting for an answer that cannot come."""

    async def main(connection: Connection) -> None:
        waiting = await _second_emit_waiting_for_the_lock(pg_store, connection)
        assert pg_store.emitter is not None
        await asyncio.to_thread(pg_store.emitter.close)
        with pytest.raises(psycopg.OperationalError, match="closed"):
            await asyncio.wait_for(waiting, 30)
        connection.rollback()
        assert (await pg_store.aemit("src", "tick", '{"n":3}', ["sub"], NOW))[0] > 0

    with pg_store.db.engine.connect() as connection:
        asyncio.run(main(connection))


def test_the_emitters_text_parameters_keep_every_value_as_sent(pg_store: EventStore) -> None:
    """Subscribers that an array literal would misread, a source with quotes, and a payload
    larger than the socket's send buffer (sent as the socket takes it) reach the tables
    exactly."""
    subscribers = sorted(['a"b', "c\\d", "e,f", "NULL", "{g}", "h i", "ünï"])
    payload = json.dumps({"text": "x" * 250_000, "quote": "'\"\\"})
    source = "src'\"\\"

    async def main() -> tuple[int, int]:
        await pg_store.aemit("other", "tick", "{}", [], NOW)  # the connection opens
        assert pg_store.emitter is not None
        assert pg_store.emitter.connection is not None
        fd = pg_store.emitter.connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as same:  # the same socket, by another fd
            same.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return await pg_store.aemit(source, "tick", payload, subscribers, NOW)

    event_id, seq = asyncio.run(main())
    assert seq == 1
    with pg_store.db.read() as session:
        stored = session.get(Event, event_id)
        assert stored is not None
        assert (stored.source, stored.name, stored.emitted_at) == (source, "tick", NOW)
        assert stored.payload == json.loads(payload)
        delivered = session.scalars(
            select(EventDelivery.subscriber)
            .where(EventDelivery.event_id == event_id)
            .order_by(EventDelivery.subscriber)
        ).all()
    assert list(delivered) == subscribers
