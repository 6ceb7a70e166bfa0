"""Run ownership: runners sharing a database fail only the runs of runners that are gone.

Each runner holds a lease (a `job_runners` row) it renews on its heartbeat; a run records
the runner that claimed it. The runners' clocks are fake, so a lease expires when the test
moves a clock, never by waiting. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from modhub.db.models import JobRun, RunnerLease
from modhub.jobs.lease import LEASE_BEATS, Lease
from modhub.jobs.store import RunStore
from modhub.services import Services
from tests.jobs.conftest import (
    T0,
    FakeClock,
    Rig,
    install,
    job,
    make_runner,
    make_settings,
    rows,
    unique,
    with_rig,
)

INTERRUPTED = "interrupted: the server stopped"
HEARTBEAT = timedelta(seconds=4)  # not the default: the lease is configurable
TTL = HEARTBEAT * LEASE_BEATS


def leases(services: Services) -> dict[str, RunnerLease]:
    """Return the runner leases by owner id."""
    with services.db.read() as session:
        return {lease.owner: lease for lease in session.scalars(select(RunnerLease))}


def run_row(services: Services, run_id: int) -> JobRun:
    (row,) = rows(services.db, id=run_id)
    return row


def install_slow(services: Services, sources: Path) -> str:
    """Install a module whose job sleeps far longer than any test here lasts."""
    return install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=900_000), job("ok")],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 600}},
    )


def test_a_second_runner_fails_the_first_runners_run_only_once_its_lease_expired(
    services: Services, sources: Path, tmp_path: Path
) -> None:
    """Two processes' worth of runners (own engine, registry and runner) share a database."""
    name = install_slow(services, sources)
    other = Services.start(make_settings(tmp_path / "data-2", services.settings.db_url))

    def at(seconds: float) -> FakeClock:
        return FakeClock(T0 + timedelta(seconds=seconds))

    async def body(rig: Rig) -> None:
        first = rig.runner
        run = first.run_now(name, "slow")
        await rig.tick()  # takes its lease, claims the run, starts it in a worker
        assert run_row(services, run.id).status == "running"
        assert run_row(services, run.id).owner == first.lease.owner.id

        clock = at(2)
        second = make_runner(other, rig.pool, clock, heartbeat=HEARTBEAT)
        rig.extra.append(second)
        await second.tick(clock())  # starting: takes its lease and sweeps
        assert set(leases(services)) == {first.lease.owner.id, second.lease.owner.id}
        assert run_row(services, run.id).status == "running"

        # Both alive: a heartbeat each every 4 s, the second sweeping each time.
        for seconds in range(4, 21, 4):
            await rig.tick(T0 + timedelta(seconds=seconds))
            await second.tick(clock.set(T0 + timedelta(seconds=seconds)))
            assert run_row(services, run.id).status == "running"

        # The first runner stops beating at 20 s (a crash: nothing is released). Its lease
        # lasts 3 heartbeats: the run is still its own at 32 s, failed at the next sweep.
        for seconds in (24, 28, 32):
            await second.tick(clock.set(T0 + timedelta(seconds=seconds)))
            assert run_row(services, run.id).status == "running", seconds
        await second.tick(clock.set(T0 + timedelta(seconds=36)))
        row = run_row(services, run.id)
        assert (row.status, row.error) == ("failed", INTERRUPTED)
        assert row.finished_at == T0 + timedelta(seconds=36)
        assert set(leases(services)) == {second.lease.owner.id}  # the dead lease is gone

        # The first runner's worker still runs the job; its answer, when it comes, does not
        # overwrite the failure, and the runner takes a lease again when it ticks.
        await rig.tick(T0 + timedelta(seconds=40))
        assert first.lease.owner.id in leases(services)
        for task in list(first.tasks.values()):
            task.cancel()
        await first.drain()
        row = run_row(services, run.id)
        assert (row.status, row.error) == ("failed", INTERRUPTED)

    try:
        with_rig(services, body, heartbeat=HEARTBEAT)
    finally:
        other.close()


CRASHING_RUNNER = """
import os, sys
from datetime import datetime, timedelta
from modhub.db import Database
from modhub.jobs.lease import Lease
from modhub.jobs.store import RunStore

url, now, run_id = sys.argv[1], datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])
store = RunStore(Database(url))
lease = Lease(store, timedelta(seconds=10))
lease.keep(now)
assert store.claim(run_id, now, lease.owner.id)
print(lease.owner.id, flush=True)
os._exit(0)  # a crash: no clean stop, the lease stays
"""


def test_a_restarted_process_fails_the_runs_its_crash_left_and_nothing_else(
    services: Services,
) -> None:
    store = RunStore(services.db)
    now = T0
    host = socket.gethostname()

    def running(owner: str | None, host: str, pid: int) -> int:
        """Return a running run owned by a runner with a fresh lease on `host`, `pid`."""
        run = store.enqueue(unique("m"), "j", "1.0.0", now, trigger="manual")
        assert run is not None
        if owner is None:  # left by a server from before owners were recorded
            with services.db.write() as session:
                session.get_one(JobRun, run.id).status = "running"
            return run.id
        with services.db.write() as session:
            session.merge(RunnerLease(owner=owner, host=host, pid=pid, started_at=now, seen_at=now))
        assert store.claim(run.id, now, owner)
        return run.id

    # A real runner process claims a run and dies without a clean stop.
    crashed = store.enqueue("crashed", "j", "1.0.0", now, trigger="manual")
    assert crashed is not None
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_RUNNER, services.db.url, now.isoformat(), str(crashed.id)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dead_owner = done.stdout.strip()
    assert run_row(services, crashed.id).owner == dead_owner
    assert leases(services)[dead_owner].seen_at == now  # its lease has not expired

    # This process in a previous life: the same pid (a container's pid 1), another owner.
    previous_life = running("previous-life", host, os.getpid())
    unowned = running(None, host, 0)
    # Runners that may be alive, with fresh leases: on another machine, or in a live
    # process of this one (our parent).
    elsewhere = running("elsewhere", "another-host", os.getpid())
    sibling = running("sibling", host, os.getppid())

    async def body(rig: Rig) -> None:
        await rig.tick(now + timedelta(seconds=1))  # the restarted process's first tick
        failed = {r.id for r in rig.runs(status="failed")}
        assert failed == {crashed.id, previous_life, unowned}
        for run_id in failed:
            assert run_row(services, run_id).error == INTERRUPTED
        assert {r.id for r in rig.runs(status="running")} == {elsewhere, sibling}
        assert set(leases(services)) == {"elsewhere", "sibling", rig.runner.lease.owner.id}
        # The others fail once their leases expire (here the default: 3 x 10 s).
        await rig.tick(now + timedelta(seconds=30))
        assert {r.id for r in rig.runs(status="running")} == {elsewhere, sibling}
        await rig.tick(now + timedelta(seconds=41))
        assert rig.runs(status="running") == []
        assert set(leases(services)) == {rig.runner.lease.owner.id}

    with_rig(services, body)


def test_a_runner_that_stops_gives_its_lease_up(services: Services) -> None:
    store = RunStore(services.db)

    async def body(rig: Rig) -> None:
        first = rig.runner
        orphan = store.enqueue("m", "orphan", "1.0.0", T0, trigger="manual")
        assert orphan is not None
        with services.db.write() as session:
            session.get_one(JobRun, orphan.id).status = "running"  # no owner: a crash's
        loop = asyncio.create_task(first.run())
        try:
            for _ in range(500):  # its first tick; no clock is involved in the wait
                # The lease is written, then (a transaction later) the orphan failed.
                if first.lease.owner.id in leases(services) and (
                    run_row(services, orphan.id).status != "running"
                ):
                    break
                await asyncio.sleep(0.02)
            assert first.lease.owner.id in leases(services)
            assert run_row(services, orphan.id).status == "failed"  # failed at start-up
            owned = store.enqueue("m", "owned", "1.0.0", T0, trigger="manual")
            assert owned is not None
            assert store.claim(owned.id, T0, first.lease.owner.id)
            second = make_runner(services, rig.pool, rig.clock)
            rig.extra.append(second)
            second.lease.keep(T0 + timedelta(seconds=1))
            assert run_row(services, owned.id).status == "running"  # its owner is alive
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert first.lease.owner.id not in leases(services)
        # Stopped cleanly: the other runner need not wait for the lease to expire.
        second.lease.keep(T0 + timedelta(seconds=2))
        row = run_row(services, owned.id)
        assert (row.status, row.error) == ("failed", INTERRUPTED)

    with_rig(services, body, concurrency=0)


def test_a_runner_claims_no_run_while_its_lease_has_lapsed(
    services: Services, sources: Path
) -> None:
    name = install_slow(services, sources)

    async def body(rig: Rig) -> None:
        await rig.tick()
        run = rig.runner.run_now(name, "ok")
        # A finished run starts the next at once, without a tick (`_execute`): not when the
        # lease may have expired meanwhile (a stalled process), since others may fail it.
        await rig.runner.execute_ready(T0 + TTL)
        assert run_row(services, run.id).status == "queued"
        await rig.tick(T0 + TTL)  # the tick renews the lease first, then claims
        assert run_row(services, run.id).owner == rig.runner.lease.owner.id
        await rig.runner.drain()
        assert run_row(services, run.id).status == "succeeded"

    with_rig(services, body, heartbeat=HEARTBEAT)


def test_a_heartbeat_that_outlives_its_runner_does_not_take_the_lease_back(
    services: Services,
) -> None:
    """A runner stopped while its heartbeat ran in a thread: the heartbeat must not write
    the lease again after `release` (it did, so its runs stayed `running` for a ttl)."""
    store = RunStore(services.db)
    lease = Lease(store, timedelta(seconds=1))
    lease.keep(T0)
    beating, go_on = threading.Event(), threading.Event()
    beat = store.beat

    def slow_beat(*args: Any) -> None:
        beating.set()
        go_on.wait(10)
        beat(*args)

    store.beat = slow_beat  # type: ignore[method-assign]
    heartbeat = threading.Thread(target=lease.keep, args=(T0 + timedelta(seconds=1),))
    heartbeat.start()
    assert beating.wait(10)
    stopping = threading.Thread(target=lease.release)  # the runner stops meanwhile
    stopping.start()
    go_on.set()
    heartbeat.join(10)
    stopping.join(10)
    assert lease.owner.id not in leases(services)
    # A heartbeat that starts after the release (its thread was late) holds nothing either.
    assert lease.keep(T0 + timedelta(seconds=2)) == 0
    assert lease.owner.id not in leases(services)
    lease.resume()  # the runner starts again
    lease.keep(T0 + timedelta(seconds=3))
    assert lease.owner.id in leases(services)
