"""Jobs across nodes: several runners (each on its own services and data dir) share one
database. A tick fires once for all of them, a module's concurrency limit holds across
them, and an attempt whose runner is gone counts as a failed attempt: it is retried on
another runner while the job's retries remain. On SQLite and PostgreSQL; the node killed
with SIGKILL is a real `modhub serve` process on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modhub.db.models import StoredValue, utcnow
from modhub.jobs import JobRunner
from modhub.jobs.claim import Claim, claim_ready
from modhub.jobs.lease import LEASE_BEATS
from modhub.jobs.store import INTERRUPTED, RunStore
from modhub.registry import Status
from modhub.services import Services
from tests.conftest import start_server
from tests.jobs.conftest import (
    ACTOR,
    T0,
    FakeClock,
    Rig,
    job,
    make_runner,
    make_settings,
    rows,
    set_status,
    unique,
    until,
    with_rig,
    write_module,
)

HEARTBEAT = timedelta(seconds=4)
TTL = HEARTBEAT * LEASE_BEATS

# Attempt 1 notes in the module's store that it started, then runs far longer than any
# test; a later attempt answers at once.
ONCE = (
    "import time\n\n\ndef handler(context):\n"
    "    context.store.set(f'started-{context.attempt}', context.run_id)\n"
    "    if context.attempt == 1:\n"
    "        time.sleep(600)\n"
    "    return {'attempt': context.attempt}\n"
)


def install_once(services: Services, sources: Path, retries: int) -> str:
    """Install and enable a module with the job `once` (ONCE) and `every` (each minute)."""
    name = unique("cluster")
    jobs = [
        job("once", "jobs/once.py", retries=retries, timeout=900_000),
        job("every", "jobs/nap.py", schedule="* * * * *"),
    ]
    folder = write_module(sources, name, jobs)
    (folder / "jobs" / "once.py").write_text(ONCE)
    services.lifecycle.add_bundle(folder, actor=ACTOR)
    set_status(services, name, Status.ENABLED)
    return name


def started(services: Services, name: str, attempt: int) -> bool:
    """Return whether attempt `attempt` of the job `once` has started (its store says so)."""
    with services.db.read() as session:
        key = f"started-{attempt}"
        found = session.scalar(
            select(StoredValue.key).where(StoredValue.module == name, StoredValue.key == key)
        )
        return found is not None


@pytest.fixture
def nodes(services: Services, tmp_path: Path) -> Iterator[list[Services]]:
    """Yield two more nodes' services (own data dirs) on the test's database."""
    others = [
        Services.start(make_settings(tmp_path / f"node-{i}", services.settings.db_url))
        for i in (2, 3)
    ]
    yield others
    for other in others:
        other.close()


def runner_of(node: Services, clock: FakeClock, **limits: Any) -> JobRunner:
    """Return a runner of `node` on `clock`, with the node's worker pool (which serves the
    module store and materializes what the node lacks, as in `modhub serve`)."""
    return make_runner(node, node.pool, clock, **limits)


async def stop(runners: list[JobRunner]) -> None:
    """Abandon the runners' runs and stop their worker pools."""
    for runner in runners:
        for task in list(runner.tasks.values()):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.drain(), 30)
        await runner.pool.close()


def test_each_tick_fires_once_across_three_runners_over_three_minutes(
    services: Services, nodes: list[Services], sources: Path
) -> None:
    name = install_once(services, sources, retries=0)

    async def body(rig: Rig) -> None:
        runners = [runner_of(n, rig.clock, heartbeat=HEARTBEAT) for n in (services, *nodes)]
        rig.extra.extend(runners)
        try:
            # Three scheduled minutes in steps of 2 s (the leases stay fresh), every runner
            # ticking at each step, all at once: the inserts of each tick race (in threads).
            for step in range(0, 3 * 60 + 3, 2):
                rig.clock.set(T0 + timedelta(seconds=step))
                await asyncio.gather(*(r.tick(rig.clock()) for r in runners))
            for runner in runners:
                await runner.drain()
        finally:
            await stop(runners)
        fired = rig.runs(module=name, job="every")
        assert sorted(r.scheduled_at for r in fired) == [
            T0 + timedelta(minutes=m) for m in (1, 2, 3)
        ]
        assert {(r.trigger, r.attempt, r.status) for r in fired} == {("schedule", 1, "succeeded")}

    with_rig(services, body, heartbeat=HEARTBEAT)


def test_a_modules_limit_holds_across_runners(
    services: Services, nodes: list[Services], sources: Path
) -> None:
    """Limit 1 per module, three runners with room to spare: never two runs at once."""
    name = install_once(services, sources, retries=0)
    store = RunStore(services.db)
    queued = [
        store.enqueue(name, "every", "1.0.0", T0 + timedelta(seconds=s), trigger="manual")
        for s in (0, 1, 2)
    ]
    ids = {run.id for run in queued if run is not None}
    assert len(ids) == 3

    async def body(rig: Rig) -> None:
        runners = [runner_of(n, rig.clock, per_module=1) for n in (services, *nodes)]
        rig.extra.extend(runners)
        most = 0

        async def round_() -> bool:
            nonlocal most
            await asyncio.gather(*(r.tick(rig.clock()) for r in runners))
            running = rig.runs(module=name, status="running")
            most = max(most, len(running))
            return len(rig.runs(module=name, status="succeeded")) == len(ids)

        try:
            rig.clock.set(T0 + timedelta(seconds=3))
            deadline = time.monotonic() + 60
            while not await round_():
                assert time.monotonic() < deadline, "the runs did not all finish in 60 s"
                await asyncio.sleep(0.02)
        finally:
            await stop(runners)
        assert most <= 1  # as the database showed it after each round
        # The handlers' own clocks: each run started after the one before it ended.
        spans = sorted(
            (r.result["value"]["started"], r.result["value"]["ended"])
            for r in rig.runs(module=name, status="succeeded")
            if r.result
        )
        assert len(spans) == 3
        for (_, ended), (began, _) in itertools.pairwise(spans):
            assert began >= ended

    with_rig(services, body)


def test_an_interrupted_attempt_is_retried_on_another_runner(
    services: Services, nodes: list[Services], sources: Path
) -> None:
    name = install_once(services, sources, retries=2)

    async def body(rig: Rig) -> None:
        first = runner_of(services, rig.clock, heartbeat=HEARTBEAT)
        second = runner_of(nodes[0], FakeClock(T0), heartbeat=HEARTBEAT)
        rig.extra.extend([first, second])
        try:
            run = first.run_now(name, "once")
            await first.tick(rig.clock())
            assert rig.runs(id=run.id)[0].owner == first.lease.owner.id
            await second.tick(second.clock())
            await until(lambda: started(services, name, 1), 60, "attempt 1 to start")
            # The first runner stops beating (a hung or lost node): its lease expires.
            assert isinstance(second.clock, FakeClock)
            await second.tick(second.clock.set(T0 + TTL))
            assert rig.runs(id=run.id)[0].status == "running"
            await second.tick(second.clock.set(T0 + TTL + HEARTBEAT))
            failed, retry = rig.runs(module=name, job="once")
            assert (failed.id, failed.status, failed.error) == (run.id, "failed", INTERRUPTED)
            assert (retry.status, retry.trigger, retry.attempt) == ("queued", "retry", 2)
            assert retry.scheduled_at == failed.scheduled_at
            # Backoff as for a failed attempt: 1 s (base) plus up to half of it in jitter.
            waited = retry.not_before - (T0 + TTL + HEARTBEAT)
            assert timedelta(seconds=1) <= waited <= timedelta(seconds=1.5)
            await second.tick(second.clock.set(retry.not_before))
            await second.drain()
            (done,) = rig.runs(id=retry.id)
            assert (done.status, done.owner) == ("succeeded", second.lease.owner.id)
            assert done.result == {"value": {"attempt": 2}}
            assert len(rig.runs(module=name, job="once")) == 2
        finally:
            await stop([first, second])

    with_rig(services, body, heartbeat=HEARTBEAT)


def test_an_interrupted_attempt_with_no_retries_left_fails_for_good(
    services: Services, nodes: list[Services], sources: Path
) -> None:
    name = install_once(services, sources, retries=0)

    async def body(rig: Rig) -> None:
        first = runner_of(services, rig.clock, heartbeat=HEARTBEAT)
        second = runner_of(nodes[0], rig.clock, heartbeat=HEARTBEAT)
        rig.extra.extend([first, second])
        try:
            run = first.run_now(name, "once")
            await first.tick(rig.clock())
            await second.tick(rig.clock())
            assert rig.runs(id=run.id)[0].owner == first.lease.owner.id
            await until(lambda: started(services, name, 1), 60, "attempt 1 to start")
            first.lease.release()  # a clean stop: no lease to wait for
            await second.tick(rig.clock.set(T0 + HEARTBEAT))
            (row,) = rig.runs(module=name, job="once")
            assert (row.status, row.error, row.attempt) == ("failed", INTERRUPTED, 1)
        finally:
            await stop([first, second])

    with_rig(services, body, heartbeat=HEARTBEAT)


# -- a real node killed in the middle of a run ---------------------------------------------


def descendants(pid: int) -> list[int]:
    """Return the pids of a process's descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_node_killed_during_a_run_has_the_run_finished_on_another_node(
    services: Services, sources: Path, tmp_path: Path
) -> None:
    """Node A (a real `modhub serve`) runs attempt 1 and is killed with SIGKILL; node B (this
    process's services, on its own clock) retries the run and finishes it as attempt 2."""
    name = install_once(services, sources, retries=1)
    node = start_server(
        tmp_path / "node-a" / "data",
        services.settings.db_url,
        {"MODHUB_PIP_OFFLINE": "true"},
    )
    leftovers: list[int] = []
    try:
        run = RunStore(services.db).enqueue(name, "once", "1.0.0", utcnow(), trigger="manual")
        assert run is not None

        deadline = time.monotonic() + 120
        while not started(services, name, 1):
            assert node.process.poll() is None, node.output()
            assert time.monotonic() < deadline, f"node A never ran attempt 1: {node.output()}"
            time.sleep(0.05)
        (row,) = rows(services.db, id=run.id)
        assert row.status == "running"
        assert row.owner is not None
        a_runner = row.owner

        leftovers = descendants(node.process.pid)
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(30)

        async def on_b() -> None:
            clock = FakeClock(utcnow())
            b = runner_of(services, clock)
            try:
                await b.tick(clock())  # A's process is gone: its run fails and is retried
                failed, retry = rows(services.db, module=name, job="once")
                assert (failed.id, failed.status, failed.error) == (run.id, "failed", INTERRUPTED)
                assert (failed.owner, failed.attempt) == (a_runner, 1)
                assert (retry.status, retry.attempt, retry.trigger) == ("queued", 2, "retry")
                await b.tick(clock.set(retry.not_before))
                await b.drain()
                (done,) = rows(services.db, id=retry.id)
                assert (done.status, done.owner) == ("succeeded", b.lease.owner.id)
                assert done.result == {"value": {"attempt": 2}}
            finally:
                await stop([b])

        asyncio.run(on_b())
    finally:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        for pid in leftovers:  # A's workers, orphaned by the kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- claiming, at the database ------------------------------------------------------------


def test_claimers_racing_for_one_module_never_pass_its_limit(services: Services) -> None:
    """Eight claimers at once (threads, own connections), each with room for one run and so
    holding a few candidates of its own: the module's limit of 2 holds for all of them."""
    store = RunStore(services.db)
    for second in range(32):
        store.enqueue("busy", "j", "1.0.0", T0 + timedelta(seconds=second), trigger="manual")
    runnable = {("busy", "j"): "1.0.0"}
    now = T0 + timedelta(minutes=1)
    start = threading.Barrier(8)

    def claimer(owner: str) -> list[Claim]:
        start.wait(30)
        return claim_ready(services.db, now, owner, 1, 2, runnable)

    with ThreadPoolExecutor(8) as threads:
        claimed = list(threads.map(claimer, [f"runner-{i}" for i in range(8)]))
    ids = [c.id for claims in claimed for c in claims]
    running = rows(services.db, status="running")
    assert sorted(ids) == sorted(r.id for r in running)
    assert len(running) == 2
    assert len({r.owner for r in running}) == 2  # room for one each
    # A finished run frees its slot for the next claim, whichever runner makes it.
    store.finish(running[0].id, "succeeded", now)
    assert len(claim_ready(services.db, now, "runner-9", 4, 2, runnable)) == 1
    assert len(rows(services.db, status="running")) == 2
