"""Firing: each enabled module's jobs fire once per tick, on a fake clock, on both databases.

These runners have `concurrency=0`, so fired runs stay queued: nothing executes here (see
test_execution.py for runs in workers).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from modhub.db.models import JobRun
from modhub.errors import Conflict, NotFound
from modhub.jobs import JobRunner
from modhub.registry import Status
from modhub.services import Services
from tests.jobs.conftest import (
    ACTOR,
    T0,
    Rig,
    install,
    job,
    make_runner,
    make_settings,
    rows,
    set_status,
    unique,
    with_rig,
    write_module,
)

IDLE = {"concurrency": 0}  # fire, never execute


def scheduled(rig: Rig, **where: str) -> list[tuple[str, datetime]]:
    """Return (job, scheduled_at) of every run, oldest first."""
    return [(r.job, r.scheduled_at) for r in rig.runs(**where)]


def test_a_job_fires_once_when_its_tick_comes(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("every", schedule="* * * * *"), job("manual"), job("five", schedule="*/5 * * * *")],
    )

    async def body(rig: Rig) -> None:
        await rig.tick(T0 + timedelta(seconds=30))  # loads the jobs; nothing is due
        await rig.tick(T0 + timedelta(seconds=59, microseconds=999_999))
        assert rig.runs() == []
        for moment in (T0 + timedelta(minutes=1), T0 + timedelta(minutes=1, seconds=1)):
            await rig.tick(moment)  # the second tick of the same minute fires nothing
        (run,) = rig.runs()
        assert (run.module, run.job, run.version) == (name, "every", "1.0.0")
        assert (run.trigger, run.status, run.attempt) == ("schedule", "queued", 1)
        assert run.scheduled_at == run.not_before == T0 + timedelta(minutes=1)
        assert run.started_at is None
        for second in range(65, 5 * 60 + 1, 5):  # every 5 s until 10:05:00
            await rig.tick(T0 + timedelta(seconds=second))
        runs = scheduled(rig)
        assert [t for j, t in runs if j == "every"] == [
            T0 + timedelta(minutes=m) for m in range(1, 6)
        ]
        assert [t for j, t in runs if j == "five"] == [T0 + timedelta(minutes=5)]
        assert all(j != "manual" for j, _ in runs)

    with_rig(services, body, **IDLE)


def test_a_job_fires_in_its_time_zone(services: Services, sources: Path) -> None:
    install(
        services,
        sources,
        unique(),
        [
            job("paris", schedule="0 9 * * *", timezone="Europe/Paris"),
            job("utc", schedule="0 9 * * *"),
        ],
    )
    winter = datetime(2025, 1, 15, 7, 59, tzinfo=UTC)

    async def body(rig: Rig) -> None:
        await rig.tick(winter)
        await rig.tick(winter + timedelta(seconds=59))
        assert rig.runs() == []
        await rig.tick(datetime(2025, 1, 15, 8, 0, tzinfo=UTC))  # 09:00 in Paris
        assert scheduled(rig) == [("paris", datetime(2025, 1, 15, 8, 0, tzinfo=UTC))]
        await rig.tick(datetime(2025, 1, 15, 9, 0, tzinfo=UTC))
        assert scheduled(rig)[-1] == ("utc", datetime(2025, 1, 15, 9, 0, tzinfo=UTC))
        assert len(rig.runs()) == 2

    with_rig(services, body, start=winter, **IDLE)


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "same-process"])
def test_ticks_missed_while_down_coalesce_into_one_run(
    services: Services, sources: Path, restart: bool
) -> None:
    install(services, sources, unique(), [job("every", schedule="* * * * *")])

    async def body(rig: Rig) -> None:
        await rig.tick(T0 + timedelta(seconds=30))
        await rig.tick(T0 + timedelta(minutes=1))
        assert len(rig.runs()) == 1
        # The server is down from 10:01:05 to 10:11:05: ticks 10:02 .. 10:11 are missed.
        back = T0 + timedelta(minutes=11, seconds=5)
        if restart:  # a new process: it finds the last fired tick in the database
            rig.runner = make_runner(rig.services, rig.pool, rig.clock, **IDLE)
        await rig.tick(back)
        assert scheduled(rig) == [
            ("every", T0 + timedelta(minutes=1)),
            ("every", T0 + timedelta(minutes=11)),  # exactly one run, for the latest tick
        ]
        await rig.tick(back + timedelta(seconds=30))
        await rig.tick(T0 + timedelta(minutes=12))
        assert [t for _, t in scheduled(rig)][-1] == T0 + timedelta(minutes=12)
        assert len(rig.runs()) == 3

    with_rig(services, body, **IDLE)


@pytest.mark.parametrize("misfire", ["skip", "coalesce"])
def test_misfire_skip_drops_missed_ticks_and_fires_the_next(
    services: Services, sources: Path, misfire: str
) -> None:
    install(services, sources, unique(), [job("hourly", schedule="0 * * * *", misfire=misfire)])
    hour = T0  # 10:00

    async def body(rig: Rig) -> None:
        await rig.tick(hour - timedelta(seconds=30))
        await rig.tick(hour)
        assert scheduled(rig) == [("hourly", hour)]
        # Down from 10:00:10 to 20:05: ten ticks (11:00 .. 20:00) missed.
        rig.runner = make_runner(rig.services, rig.pool, rig.clock, **IDLE)
        await rig.tick(hour + timedelta(hours=10, minutes=5))
        await rig.tick(hour + timedelta(hours=10, minutes=30))
        if misfire == "skip":
            assert scheduled(rig) == [("hourly", hour)]
        else:
            assert scheduled(rig) == [("hourly", hour), ("hourly", hour + timedelta(hours=10))]
        await rig.tick(hour + timedelta(hours=11))  # the next tick fires either way
        assert scheduled(rig)[-1] == ("hourly", hour + timedelta(hours=11))

    with_rig(services, body, **IDLE)


def test_a_job_without_schedule_runs_only_on_demand(services: Services, sources: Path) -> None:
    name = install(services, sources, unique(), [job("manual")])

    async def body(rig: Rig) -> None:
        for hours in range(0, 49, 3):
            await rig.tick(T0 + timedelta(hours=hours))
        assert rig.runs() == []
        run = rig.runner.run_now(name, "manual")
        assert (run.trigger, run.status, run.job, run.attempt) == ("manual", "queued", "manual", 1)
        assert run.scheduled_at == rig.clock.now
        (row,) = rig.runs()
        assert row.id == run.id
        assert rig.runner.jobs_of(name)[0]["nextRuns"] == []

    with_rig(services, body, **IDLE)


def test_run_now_and_next_fire_times_need_no_tick(services: Services, sources: Path) -> None:
    """A process with the scheduler off never ticks: its API still runs jobs and shows them."""
    name = install(
        services,
        sources,
        unique(),
        [
            job("every", schedule="*/10 * * * *"),
            job("paris", schedule="0 9 * * *", timezone="Europe/Paris"),
            job("manual"),
        ],
    )

    async def body(rig: Rig) -> None:
        rig.clock.set(T0 + timedelta(seconds=30))
        jobs = {j["name"]: j for j in rig.runner.jobs_of(name)}
        assert jobs["every"]["nextRuns"] == [
            (T0 + timedelta(minutes=m)).isoformat() for m in (10, 20, 30)
        ]
        assert jobs["paris"]["timezone"] == "Europe/Paris"
        assert jobs["paris"]["nextRuns"][0] == "2025-01-16T08:00:00+00:00"
        assert jobs["manual"] == {
            "name": "manual",
            "handler": "jobs/ok.py",
            "schedule": None,
            "timezone": "UTC",
            "timeout": None,
            "retries": 0,
            "misfire": "coalesce",
            "nextRuns": [],
        }
        run = rig.runner.run_now(name, "manual")
        assert (run.version, run.status) == ("1.0.0", "queued")
        with pytest.raises(NotFound):
            rig.runner.run_now(name, "nope")
        with pytest.raises(NotFound):
            rig.runner.run_now("no-such-module", "manual")

    with_rig(services, body, **IDLE)


def test_jobs_of_a_module_that_is_not_enabled_never_fire(services: Services, sources: Path) -> None:
    registered = install(
        services, sources, unique(), [job("a", schedule="* * * * *")], enable=False
    )
    disabled = install(services, sources, unique(), [job("a", schedule="* * * * *")])
    set_status(services, disabled, Status.DISABLED)

    async def body(rig: Rig) -> None:
        for minute in range(0, 6):
            await rig.tick(T0 + timedelta(minutes=minute))
        assert rig.runs() == []
        for name in (registered, disabled):
            assert rig.runner.jobs_of(name)[0]["nextRuns"] == []
            with pytest.raises(Conflict, match="not ENABLED") as caught:
                rig.runner.run_now(name, "a")
            assert caught.value.status == 409

    with_rig(services, body, **IDLE)


def test_two_schedulers_on_one_database_fire_each_tick_once(
    services: Services, sources: Path, tmp_path: Path
) -> None:
    """Two `Services` (two processes' worth: own engine, registry, runner) share the database."""
    first = install(
        services,
        sources,
        unique(),
        [
            job("a", schedule="* * * * *"),
            job("b", schedule="* * * * *"),
            job("c", schedule="*/2 * * * *"),
        ],
    )
    second = install(services, sources, unique(), [job("a", schedule="* * * * *")])
    other = Services.start(make_settings(tmp_path / "data-2", services.settings.db_url))
    minutes = 12
    barrier = threading.Barrier(2)

    def fire(runner: JobRunner, moment: datetime) -> list[int]:
        barrier.wait(timeout=10)  # both start the same instant
        return runner.fire_due(moment)

    async def body(rig: Rig) -> None:
        runners = [rig.runner, make_runner(other, rig.pool, rig.clock, **IDLE)]
        rig.extra.append(runners[1])
        start = T0 + timedelta(seconds=30)
        await asyncio.gather(*(r.tick(start) for r in runners))  # both load the jobs
        fired: list[list[int]] = [[], []]
        for step in range(1, minutes * 3 + 1):  # every 20 s
            moment = start + timedelta(seconds=20 * step)
            if step % 3:
                results = await asyncio.gather(
                    *(asyncio.to_thread(fire, r, moment) for r in runners)
                )
                for i, result in enumerate(results):
                    fired[i] += result
            else:  # whole ticks, concurrently
                await asyncio.gather(*(r.tick(moment) for r in runners))
        runs = rows(services.db)
        keys = Counter((r.module, r.job, r.scheduled_at) for r in runs)
        assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
        ticks = [T0 + timedelta(minutes=m) for m in range(1, minutes + 1)]
        expected = {(first, j, t) for j in ("a", "b") for t in ticks}
        expected |= {(first, "c", t) for t in ticks if t.minute % 2 == 0}
        expected |= {(second, "a", t) for t in ticks}
        assert set(keys) == expected
        assert not set(fired[0]) & set(fired[1])  # each run was inserted by one of them

    try:
        with_rig(services, body, **IDLE)
    finally:
        other.close()


def test_disabling_cancels_queued_runs_and_stops_the_schedule(
    services: Services, sources: Path
) -> None:
    name = install(services, sources, unique(), [job("every", schedule="* * * * *")])

    async def body(rig: Rig) -> None:
        await rig.tick(T0 + timedelta(seconds=30))
        await rig.tick(T0 + timedelta(minutes=1))
        (run,) = rig.runs()
        assert run.status == "queued"
        set_status(services, name, Status.DISABLED)
        await rig.tick(T0 + timedelta(minutes=1, seconds=10))
        (run,) = rig.runs()
        assert run.status == "cancelled"
        assert run.finished_at == T0 + timedelta(minutes=1, seconds=10)
        assert "disabled" in (run.error or "")
        for minute in range(2, 11):
            await rig.tick(T0 + timedelta(minutes=minute))
        assert len(rig.runs()) == 1
        assert rig.runner.jobs_of(name)[0]["nextRuns"] == []
        # Enabled again at 10:10:30: the ticks while it was disabled do not fire.
        set_status(services, name, Status.ENABLED)
        await rig.tick(T0 + timedelta(minutes=10, seconds=30))
        assert len(rig.runs()) == 1
        await rig.tick(T0 + timedelta(minutes=11))
        assert scheduled(rig)[-1] == ("every", T0 + timedelta(minutes=11))
        assert len(rig.runs()) == 2

    with_rig(services, body, **IDLE)


def test_an_upgrade_takes_up_the_new_versions_jobs(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("a", schedule="* * * * *"), job("b", schedule="* * * * *")],
    )
    services.lifecycle.add_bundle(
        write_module(
            sources,
            name,
            [job("a", schedule="*/2 * * * *"), job("c", schedule="* * * * *")],
            version="2.0.0",
        ),
        actor=ACTOR,
    )

    async def body(rig: Rig) -> None:
        await rig.tick(T0 + timedelta(seconds=30))
        await rig.tick(T0 + timedelta(minutes=1))
        assert sorted(scheduled(rig)) == [
            ("a", T0 + timedelta(minutes=1)),
            ("b", T0 + timedelta(minutes=1)),
        ]
        done, _, _ = services.lifecycle.upgrade(name, "2.0.0", actor=ACTOR)
        assert done
        assert services.registry.get(name).status == Status.ENABLED
        await rig.tick(T0 + timedelta(minutes=1, seconds=10))
        # The queued runs of 1.0.0 can never start at 2.0.0: they are cancelled.
        assert {r.status for r in rig.runs(version="1.0.0")} == {"cancelled"}
        await rig.tick(T0 + timedelta(minutes=2))
        await rig.tick(T0 + timedelta(minutes=3))
        new = [(r.job, r.scheduled_at, r.status) for r in rig.runs(version="2.0.0")]
        assert sorted(new) == [
            ("a", T0 + timedelta(minutes=2), "queued"),
            ("c", T0 + timedelta(minutes=2), "queued"),
            ("c", T0 + timedelta(minutes=3), "queued"),
        ]
        assert [j["name"] for j in rig.runner.jobs_of(name)] == ["a", "c"]
        with pytest.raises(NotFound):
            rig.runner.run_now(name, "b")

    with_rig(services, body, **IDLE)


def test_removing_a_module_deletes_its_schedule(services: Services, sources: Path) -> None:
    name = install(services, sources, unique(), [job("every", schedule="* * * * *")])

    async def body(rig: Rig) -> None:
        await rig.tick(T0 + timedelta(seconds=30))
        await rig.tick(T0 + timedelta(minutes=1))
        done, _, _ = services.lifecycle.remove(name, actor=ACTOR)  # type: ignore[misc]
        assert done
        await rig.tick(T0 + timedelta(minutes=1, seconds=10))
        assert rig.runner.specs == {}
        (run,) = rig.runs()
        assert run.status == "cancelled"
        for minute in range(2, 6):
            await rig.tick(T0 + timedelta(minutes=minute))
        assert len(rig.runs()) == 1
        with pytest.raises(NotFound):
            rig.runner.run_now(name, "every")
        with pytest.raises(NotFound):
            rig.runner.jobs_of(name)

    with_rig(services, body, **IDLE)


def test_prune_deletes_old_finished_runs_only(services: Services) -> None:
    store = services.jobs.store
    now = datetime.now(UTC)
    ids = {}
    for i, (status, age_days) in enumerate(
        [
            ("succeeded", 40),
            ("failed", 31),
            ("timed_out", 45),
            ("cancelled", 90),
            ("succeeded", 29),  # recent enough
            ("failed", 1),
            ("queued", 60),  # old but still active: kept
            ("running", 60),
        ]
    ):
        run = store.enqueue(
            "m", f"j{i}", "1.0.0", now - timedelta(days=age_days), trigger="schedule"
        )
        assert run is not None
        with services.db.write() as session:
            session.execute(
                update(JobRun)
                .where(JobRun.id == run.id)
                .values(status=status, created_at=now - timedelta(days=age_days))
            )
        ids[run.id] = (status, age_days)
    assert store.prune(timedelta(days=30), now) == 4
    kept = {r.id for r in rows(services.db)}
    assert kept == {
        i for i, (status, age) in ids.items() if age < 30 or status in ("queued", "running")
    }
    assert store.prune(timedelta(days=30), now) == 0


def test_the_scheduler_prunes_with_its_retention(services: Services) -> None:
    now = datetime.now(UTC)
    store = services.jobs.store
    old = store.enqueue("m", "old", "1.0.0", now - timedelta(days=3), trigger="schedule")
    new = store.enqueue("m", "new", "1.0.0", now, trigger="schedule")
    assert old is not None
    assert new is not None
    with services.db.write() as session:
        session.execute(update(JobRun).values(status="succeeded"))
        session.execute(
            update(JobRun).where(JobRun.id == old.id).values(created_at=now - timedelta(days=3))
        )

    async def body(rig: Rig) -> None:
        await rig.tick(now)

    with_rig(services, body, start=now, concurrency=0, retention=timedelta(days=2))
    assert [r.job for r in rows(services.db)] == ["new"]
