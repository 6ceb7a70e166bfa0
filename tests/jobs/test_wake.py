"""Cross-node wake on enqueue: whichever node queues runs (a cron tick, "run now", a retry,
an interrupted attempt), it NOTIFYs `modhub_jobs` when it commits, and every node's runner
claims at once instead of at its next poll. PostgreSQL only: on SQLite there is one node,
and it wakes its own runner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from modhub.cluster.notify import JOBS_CHANNEL, ChangeListener, libpq_url
from modhub.jobs import JobRunner
from modhub.jobs.dispatch import Outcome, record
from modhub.jobs.execution import utc_now
from modhub.jobs.store import RunStore
from modhub.services import Services
from tests.jobs.conftest import install, job, make_runner, make_settings, rows, unique, until

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
LONG_POLL = 3600.0  # a runner's poll interval: longer than any test, so only a NOTIFY wakes it


@pytest.fixture
def node_b(services: Services, tmp_path: Path) -> Iterator[Services]:
    """Yield a second node's services (its own data dir) on the test's database."""
    other = Services.start(make_settings(tmp_path / "node-b", services.settings.db_url))
    yield other
    other.close()


@contextlib.contextmanager
def listening(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Yield a connection listening on the jobs channel."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(f"LISTEN {JOBS_CHANNEL}")
        yield connection


def heard(connection: psycopg.Connection[Any]) -> int:
    """Return how many jobs notifications arrive within a second."""
    return sum(1 for _ in connection.notifies(timeout=1.0))


async def serve(node: Services, runner: JobRunner) -> list[asyncio.Task[None]]:
    """Start the runner's loop (polling every hour) and its jobs listener, as `modhub serve`
    does; return once the runner holds its lease and the listener listens."""
    listener = ChangeListener(node.db.url, [runner.claim_soon], channel=JOBS_CHANNEL)
    tasks = [
        asyncio.create_task(runner.run(interval=LONG_POLL)),
        asyncio.create_task(listener.run()),
    ]
    await until(lambda: runner.lease.held(utc_now()) and listener.connected, 30, "the runner")
    return tasks


async def stop(runners: list[JobRunner], tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the loops, abandon the runs, stop the worker pools."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for runner in runners:
        for run in list(runner.tasks.values()):
            run.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.drain(), 30)
        await runner.pool.close()


def test_every_enqueue_notifies_the_jobs_channel(services: Services) -> None:
    store = RunStore(services.db)
    now = datetime.now(UTC)
    row = {
        "module": "m",
        "job": "j",
        "version": "1.0.0",
        "trigger": "schedule",
        "scheduled_at": now + timedelta(minutes=1),  # not the manual run's instant
        "not_before": now,
        "attempt": 1,
        "status": "queued",
        "log": "",
        "created_at": now,
    }
    with listening(services.settings.db_url) as connection:
        assert store.enqueue("m", "j", "1.0.0", now, trigger="manual") is not None
        assert heard(connection) == 1
        assert len(store.enqueue_many([row])) == 1  # a cron tick
        assert heard(connection) == 1
        assert store.enqueue_many([row]) == []  # fired by another node already: no wake
        assert heard(connection) == 0
        # A failed attempt's retry, recorded by a round.
        (run,) = rows(services.db, trigger="schedule")
        assert store.claim(run.id, now, "gone-runner")
        retry = {**row, "trigger": "retry", "attempt": 2}
        with services.db.write() as session:
            outcome = Outcome(run.id, "failed", now, error="boom", retry=retry)
            assert record(session, [outcome], store.insert_new()) == {run.id}
        assert heard(connection) == 1
        # An interrupted attempt (its runner is gone), queued again.
        (second,) = rows(services.db, trigger="retry")
        assert store.claim(second.id, now, "gone-runner")
        again = store.interrupt_running(now, "me", timedelta(seconds=30), lambda _, at: at)
        assert again == 1
        assert heard(connection) == 1
        # Finishing a run without a retry queues nothing, and wakes nobody.
        (third,) = rows(services.db, attempt=3)
        assert store.claim(third.id, now, "me")
        assert store.finish(third.id, "succeeded", now)
        assert heard(connection) == 0


def test_a_run_queued_on_one_node_is_claimed_by_another_at_once(
    services: Services, node_b: Services, sources: Path
) -> None:
    """Node A queues ("run now") but has no room; node B, polling once an hour, is woken by
    the notification and runs it."""
    name = install(services, sources, unique("wake"), [job("ok")])

    async def main() -> None:
        a = make_runner(services, services.pool, utc_now, concurrency=0)
        b = make_runner(node_b, node_b.pool, utc_now)
        tasks = await serve(services, a) + await serve(node_b, b)
        try:
            run = a.run_now(name, "ok")
            await until(lambda: rows(services.db, id=run.id)[0].status == "succeeded", 60, "B")
            (done,) = rows(services.db, id=run.id)
            assert done.owner == b.lease.owner.id
        finally:
            await stop([a, b], tasks)

    asyncio.run(main())


def test_a_boundarys_runs_are_split_across_woken_nodes(
    services: Services, node_b: Services, sources: Path
) -> None:
    """Twelve runs queued at once (as a cron tick queues them) while both runners wait on an
    hour's poll: both claim, and each runs some of them."""
    name = install(services, sources, unique("wake"), [job("nap", "jobs/nap.py")])
    store = RunStore(services.db)

    async def main() -> None:
        a = make_runner(services, services.pool, utc_now, concurrency=2, per_module=4)
        b = make_runner(node_b, node_b.pool, utc_now, concurrency=2, per_module=4)
        tasks = await serve(services, a) + await serve(node_b, b)
        try:
            now = utc_now()
            batch = [
                {
                    "module": name,
                    "job": "nap",
                    "version": "1.0.0",
                    "trigger": "schedule",
                    "scheduled_at": now + timedelta(microseconds=i),
                    "not_before": now,
                    "attempt": 1,
                    "status": "queued",
                    "log": "",
                    "created_at": now,
                }
                for i in range(12)
            ]
            assert len(await asyncio.to_thread(store.enqueue_many, batch)) == 12

            def finished() -> bool:
                done = rows(services.db, module=name, status="succeeded")
                return len(done) == 12

            await until(finished, 90, "the twelve runs")
            owners = [r.owner for r in rows(services.db, module=name)]
            assert owners.count(a.lease.owner.id) >= 2
            assert owners.count(b.lease.owner.id) >= 2
        finally:
            await stop([a, b], tasks)

    asyncio.run(main())
