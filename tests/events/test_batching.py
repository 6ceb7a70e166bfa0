"""The fast paths: an awaited emit on the store's writer (on SQLite, on the event loop when
the write lock is free, else in the writer thread), and a finished run recorded with the
pair's next run claimed in one transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from modhub.events import store as events_store
from modhub.events.publish import SEQ_LOCK
from modhub.events.store import EventStore
from modhub.jobs.claim import module_key
from modhub.services import Services
from modhub.store.writer import GroupWrites
from tests.events.conftest import (
    Rig,
    deliveries,
    emitter,
    install,
    seen,
    subscriber,
    unique,
    with_rig,
)


@contextmanager
def write_lock_held(services: Services, source: str) -> Iterator[None]:
    """Hold what an emit of `source` must wait for, from another connection: SQLite's write
    lock, or the source's sequence lock on PostgreSQL."""
    if services.db.dialect == "sqlite":
        path = services.db.engine.url.database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    engine = create_engine(services.db.engine.url)
    try:
        with engine.begin() as connection:
            lock = text("SELECT pg_advisory_xact_lock(:a, :b)")
            connection.execute(lock, {"a": SEQ_LOCK, "b": module_key(source)})
            yield
    finally:
        engine.dispose()


def loop_commits(services: Services) -> int:
    """Return how many writes the store's writer committed on the event loop (SQLite)."""
    writes = services.events.store.writes
    assert isinstance(writes, GroupWrites) == (services.db.dialect == "sqlite")
    if isinstance(writes, GroupWrites) and writes.on_loop is not None:
        return writes.on_loop.commits
    return 0


def test_an_awaited_emit_waits_for_a_held_write_lock_off_the_loop_and_then_commits(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    version = services.registry.get(source).version
    sqlite = services.db.dialect == "sqlite"

    async def main() -> None:
        args: dict[str, Any] = {"name": "thing.happened", "payload": {"n": 1}}
        first = await services.events.aemit(source, version, args)
        before = loop_commits(services)
        assert before == (1 if sqlite else 0)  # the lock was free: committed on the loop
        with write_lock_held(services, source):
            emit = asyncio.create_task(
                services.events.aemit(source, version, {**args, "payload": {"n": 2}})
            )
            for _ in range(5):  # the loop keeps running while the emit waits for the lock
                await asyncio.to_thread(lambda: None)
            assert not emit.done()
        second = await emit
        assert loop_commits(services) == before  # it went to the writer thread instead
        assert second["seq"] == first["seq"] + 1
        third = await services.events.aemit(source, version, {**args, "payload": {"n": 3}})
        assert third["seq"] == second["seq"] + 1
        assert loop_commits(services) == before + (1 if sqlite else 0)  # free again: the loop

    asyncio.run(main())
    stored = [services.events.store.get(d.event_id) for d in deliveries(services)]
    assert [(e["payload"]["n"], e["deliveries"][0]["subscriber"]) for e in stored] == [
        (1, sink),
        (2, sink),
        (3, sink),
    ]


def test_a_large_payload_is_written_by_the_writer_thread_not_on_the_loop(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    version = services.registry.get(source).version
    big = {"n": 1, "vm": "x" * 100_000}

    async def main() -> dict[str, int]:
        before = loop_commits(services)
        done = await services.events.aemit(
            source, version, {"name": "thing.happened", "payload": big}
        )
        assert loop_commits(services) == before
        return done

    done = asyncio.run(main())
    assert services.events.store.get(done["id"])["payload"] == big


def test_a_finished_run_is_recorded_with_the_pairs_next_run_claimed(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    store: EventStore = services.events.store

    async def body(rig: Rig) -> None:
        for n in range(1, 6):
            rig.emit(source, {"n": n})
        claims = 0
        claim = store.claim

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal claims
            found = claim(*args, **kwargs)
            claims += bool(found)
            return found

        store.claim = counted  # type: ignore[method-assign]
        await rig.settle()
        assert claims == 1  # runs of two: the first claimed, the next two went on from it

    with_rig(services, body, batch=2)
    assert [r["payload"]["n"] for r in seen(services, sink)] == [1, 2, 3, 4, 5]
    assert {(d.status, d.attempt) for d in deliveries(services)} == {("delivered", 1)}


def test_going_on_records_only_its_own_deliveries_and_claims_nothing_behind_anothers(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    store: EventStore = services.events.store
    lease = timedelta(seconds=30)

    async def body(rig: Rig) -> None:
        for n in range(1, 5):
            rig.emit(source, {"n": n})
        (run,) = store.claim("slow-node", rig.clock(), 8, {sink}, lease, batch=2)
        rig.clock.advance(seconds=31)  # its lease expired: another node takes the run over
        (again,) = store.claim("other-node", rig.clock(), 8, {sink}, lease, batch=2)
        assert [d.id for d in again] == [d.id for d in run]
        # The slow node comes back: its finish records nothing, and it claims nothing
        # while the other node runs the pair's oldest deliveries.
        done = [d.id for d in run]
        assert store.go_on(done, "slow-node", rig.clock(), (sink, source), lease, 2) == []
        assert [(d.status, d.claimed_by) for d in deliveries(services)][:2] == [
            ("running", "other-node")
        ] * 2
        following = store.go_on(done, "other-node", rig.clock(), (sink, source), lease, 2)
        assert [(d.seq, d.attempt) for d in following] == [(3, 1), (4, 1)]
        rows = deliveries(services)
        assert [(d.status, d.claimed_by) for d in rows] == [
            ("delivered", "other-node"),
            ("delivered", "other-node"),
            ("running", "other-node"),
            ("running", "other-node"),
        ]

    with_rig(services, body)


def test_a_go_on_that_fails_part_way_rolls_back_and_the_run_is_recorded_alone(
    services: Services, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    store: EventStore = services.events.store
    go_on, claim_run = store.go_on, events_store.claim_run
    failures: list[list[int]] = []

    def failing_go_on(done: list[int], *args: Any) -> Any:
        if not failures:  # the first: its finish is written, then claiming the next fails
            failures.append(list(done))

            def fail(*_: Any) -> Any:
                raise RuntimeError("the connection dropped mid-transaction")

            monkeypatch.setattr(events_store, "claim_run", fail)
            try:
                return go_on(done, *args)
            except RuntimeError:
                rows = {d.id: d.status for d in deliveries(services)}
                assert [rows[i] for i in done] == ["running", "running"]  # rolled back
                raise
            finally:
                monkeypatch.setattr(events_store, "claim_run", claim_run)
        return go_on(done, *args)

    monkeypatch.setattr(store, "go_on", failing_go_on)

    async def body(rig: Rig) -> None:
        for n in range(1, 6):
            rig.emit(source, {"n": n})
        await rig.settle()

    with_rig(services, body, batch=2)
    assert len(failures) == 1
    assert len(failures[0]) == 2
    assert [r["payload"]["n"] for r in seen(services, sink)] == [1, 2, 3, 4, 5]
    # Each delivered once: the rolled-back finish was written again on its own.
    assert {(d.status, d.attempt) for d in deliveries(services)} == {("delivered", 1)}


def test_a_pair_with_a_live_run_is_not_claimed_even_for_an_older_redelivery(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    other = install(services, sources, subscriber(unique("sub"), source))
    store: EventStore = services.events.store
    lease = timedelta(seconds=30)

    async def body(rig: Rig) -> None:
        first = rig.emit(source, {"n": 1})
        (run,) = store.claim("node", rig.clock(), 8, {sink}, lease)
        assert store.delivered([run[0].id], "node", rig.clock()) == 1
        rig.emit(source, {"n": 2})
        (running,) = store.claim("node", rig.clock(), 8, {sink}, lease)
        assert [d.seq for d in running] == [2]
        store.redeliver(first, sink, rig.clock())
        # The pair runs seq 2: nothing of it is claimed, not even the older seq 1 again;
        # another subscriber's pair of the same source is.
        assert store.claim("node", rig.clock(), 8, {sink}, lease) == []
        (others,) = store.claim("node", rig.clock(), 8, {sink, other}, lease)
        assert (others[0].subscriber, [d.seq for d in others]) == (other, [1, 2])
        assert store.delivered([running[0].id], "node", rig.clock()) == 1
        (again,) = store.claim("node", rig.clock(), 8, {sink}, lease)
        assert [(d.seq, d.attempt) for d in again] == [(1, 1)]

    with_rig(services, body)


def test_the_services_dispatcher_hands_a_changed_config_to_the_next_run(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    manifest = subscriber(unique("sub"), source)
    manifest["config"] = {"schema": {"token": {"type": "password"}, "size": {"type": "integer"}}}
    sink = install(services, sources, manifest)
    services.registry.set_config(sink, {"token": "s3cret", "size": 1}, actor="t")
    # The routes' cached configs, as Services gives them to its dispatcher.
    assert services.dispatcher.configs is services.module_configs

    async def body(rig: Rig) -> None:
        rig.dispatcher.configs = services.module_configs
        rig.emit(source, {"n": 1})
        await rig.settle()
        services.registry.set_config(sink, {"token": "other", "size": 2}, actor="t")
        rig.emit(source, {"n": 2})
        await rig.settle()

    with_rig(services, body)
    assert [r["config"] for r in seen(services, sink)] == [
        {"token": "s3cret", "size": 1},
        {"token": "other", "size": 2},
    ]
