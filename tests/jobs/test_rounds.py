"""Runs settle in rounds (jobs/dispatch.py): a round records every outcome that came in
since the last one, queues their retries, claims runs for the freed slots and reads their
configs, in one transaction. SQLite and PostgreSQL (`database_url`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modhub.jobs.claim import claim_ready
from modhub.jobs.dispatch import ConfigReader, Outcome, Round, run_round
from modhub.sandbox import PoolLimits, WorkerPool
from modhub.services import Services
from tests.jobs.conftest import (
    ACTOR,
    T0,
    FakeClock,
    Rig,
    install,
    job,
    make_runner,
    rows,
    unique,
    until,
    with_rig,
)


def test_a_round_records_only_runs_still_running_and_queues_their_retries(
    services: Services, sources: Path
) -> None:
    name = install(services, sources, unique(), [job("ok"), job("other")])
    store = services.jobs.store
    runnable = {(name, "ok"): "1.0.0", (name, "other"): "1.0.0"}
    first = store.enqueue(name, "ok", "1.0.0", T0, trigger="manual")
    second = store.enqueue(name, "other", "1.0.0", T0, trigger="manual")
    assert first is not None
    assert second is not None
    claimed = claim_ready(services.db, T0, "runner-a", 2, 10, runnable)
    assert sorted(c.id for c in claimed) == sorted([first.id, second.id])
    store.cancel(second.id, T0)  # cancelled while its handler ran: its outcome is dropped

    def retry_of(job_name: str) -> dict[str, object]:
        return {
            "module": name,
            "job": job_name,
            "version": "1.0.0",
            "trigger": "retry",
            "scheduled_at": T0,
            "not_before": T0 + timedelta(seconds=5),
            "attempt": 2,
            "status": "queued",
            "log": "",
            "created_at": T0,
        }

    outcomes = [
        Outcome(first.id, "failed", T0, error="boom", log="a line", retry=retry_of("ok")),
        Outcome(second.id, "failed", T0, error="boom", retry=retry_of("other")),
    ]
    done = run_round(
        services.db,
        outcomes,
        store.insert_new(),
        ConfigReader(services.registry.box),
        now=T0,
        owner="runner-a",
        room=2,
        per_module=10,
        runnable=runnable,
        probe=True,
    )
    assert done.recorded == {first.id}
    assert done.claims == []  # the retry waits for its backoff
    assert (store.get(first.id).status, store.get(first.id).error) == ("failed", "boom")
    assert store.get(first.id).log_tail == "a line"
    assert store.get(second.id).status == "cancelled"
    retries = rows(services.db, trigger="retry")
    assert [(r.job, r.attempt, r.status) for r in retries] == [("ok", 2, "queued")]
    # Once due, the next round claims it, with its module's config.
    later = T0 + timedelta(seconds=5)
    again = run_round(
        services.db,
        [],
        store.insert_new(),
        ConfigReader(services.registry.box),
        now=later,
        owner="runner-a",
        room=2,
        per_module=10,
        runnable=runnable,
        probe=True,
    )
    assert [(c.job, c.attempt) for c in again.claims] == [("ok", 2)]
    assert again.configs == {name: {}}


def test_a_round_for_a_module_that_is_gone_gives_no_config(services: Services) -> None:
    reader = ConfigReader(services.registry.box)
    assert reader.read(services.db, {"no-such-module"}) == {"no-such-module": None}


def test_a_config_change_reaches_the_next_run_and_secrets_are_in_clear(
    services: Services, sources: Path
) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("ok")],
        config={"token": {"type": "password", "label": "Token"}},
    )
    services.registry.set_config(name, {"token": "first-s3cret"}, actor=ACTOR)

    async def body(rig: Rig) -> None:
        seen = []
        for value in ("first-s3cret", "second-s3cret"):
            services.registry.set_config(name, {"token": value}, actor=ACTOR)
            run = rig.runner.run_now(name, "ok")
            rig.clock.advance(seconds=1)
            await rig.tick()
            await rig.runner.drain()
            result = rig.runner.store.get(run.id).result
            seen.append(result["config"]["token"])
        assert seen == ["first-s3cret", "second-s3cret"]

    with_rig(services, body)


def test_runs_finishing_together_are_all_recorded_within_the_bounds(
    services: Services, sources: Path
) -> None:
    modules = [install(services, sources, unique(), [job("ok")]) for _ in range(3)]

    async def body(rig: Rig) -> None:
        ids = []
        for _ in range(12):
            for name in modules:
                ids.append(rig.runner.run_now(name, "ok").id)
                rig.clock.advance(microseconds=1)  # a run now is unique per instant
        await rig.tick()
        await rig.runner.drain()
        assert rig.runner.tasks == {}
        succeeded = rows(services.db, status="succeeded")
        assert sorted(r.id for r in succeeded) == sorted(ids)
        assert {r.owner for r in succeeded} == {rig.runner.lease.owner.id}

    with_rig(services, body, concurrency=4, per_module=2)


def test_run_now_starts_at_once_in_a_runner_that_ticks_once_an_hour(
    services: Services, sources: Path
) -> None:
    name = install(services, sources, unique(), [job("ok")])

    async def body(rig: Rig) -> None:
        loop = asyncio.create_task(rig.runner.run(interval=3600))
        try:
            # The first tick takes the lease; the next would come in an hour.
            await until(lambda: rig.runner.lease.renewed_at is not None, what="the lease")
            await asyncio.sleep(0.2)  # the first tick over: the loop now waits
            run = await asyncio.to_thread(rig.runner.run_now, name, "ok")
            await until(
                lambda: rig.runner.store.status_of(run.id) == "succeeded",
                timeout=30,
                what="the run started by its wake",
            )
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    with_rig(services, body)


def test_a_runner_whose_loop_stopped_mid_round_runs_rounds_on_the_next_loop(
    services: Services, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test's server thread stops its loop while a round is under way and another waits
    for it: the runner's next loop must still run rounds (it used to log "bound to a
    different event loop" on every tick)."""
    name = install(services, sources, unique(), [job("ok")])
    pool = WorkerPool(services.settings.data_dir, PoolLimits(backoff_base=0.05))
    runner = make_runner(services, pool, FakeClock(T0))
    # The first round's database work waits until the end; every later round's goes on.
    gate, calls = threading.Event(), itertools.count()

    def first_waits(*args: Any, **kwargs: Any) -> Round:
        if next(calls) == 0:
            gate.wait(30)
        return run_round(*args, **kwargs)

    monkeypatch.setattr("modhub.jobs.runner.run_round", first_waits)
    first = asyncio.new_event_loop()
    # One task holds the round (its lease not taken: it claims nothing when let go), the
    # other waits for it; the loop stops under them.
    stranded = [first.create_task(runner.execute_ready(T0)) for _ in range(2)]
    first.run_until_complete(asyncio.sleep(0))
    assert not any(task.done() for task in stranded)

    async def next_loop() -> str | None:
        try:
            run = runner.run_now(name, "ok")
            await runner.tick(T0)  # takes the lease, then runs a round
            await runner.drain()
            return runner.store.status_of(run.id)
        finally:
            await pool.close()

    try:
        assert asyncio.run(next_loop()) == "succeeded"
    finally:  # end the stranded rounds here, not in a garbage collection at a random time
        gate.set()
        first.run_until_complete(asyncio.gather(*stranded, return_exceptions=True))
        first.close()
