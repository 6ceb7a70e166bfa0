"""Execution: runs in the module's real worker with timeout, retries, bounds and cancellation.

Each module is installed as a bundle with an environment; its handlers (tests/jobs/conftest.py
HANDLERS) succeed, raise, sleep past their timeout or fail twice then succeed. The runner's
clock is fake (it decides `not_before` and the recorded times); workers run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modhub.errors import Conflict
from modhub.registry import Status
from modhub.services import Services
from tests.jobs.conftest import (
    ACTOR,
    T0,
    Rig,
    install,
    job,
    set_status,
    unique,
    until,
    with_rig,
)


def status_of(rig: Rig, run_id: int) -> str | None:
    return rig.runner.store.status_of(run_id)


async def run_to_end(rig: Rig, advance: float = 0.0) -> None:
    """Tick (moving the clock by `advance` seconds first) and wait for the runs it started."""
    if advance:
        rig.clock.advance(seconds=advance)
    await rig.tick()
    await rig.runner.drain()


def test_a_run_succeeds_with_its_result_context_and_log(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("ok"), job("every", schedule="* * * * *")],
        config={
            "greeting": {"type": "string", "label": "Greeting", "default": "hello"},
            "token": {"type": "password", "label": "Token"},
        },
    )
    services.registry.set_config(name, {"token": "s3cret"}, actor=ACTOR)

    async def body(rig: Rig) -> None:
        run = rig.runner.run_now(name, "ok")
        await run_to_end(rig)
        (row,) = rig.runs()
        assert row.status == "succeeded", row.error
        assert row.started_at == row.finished_at == T0
        assert row.error is None
        view = rig.runner.store.get(run.id)
        assert view.result == {
            "job": "ok",
            "scheduled": T0.isoformat(),
            "attempt": 1,
            "runId": str(run.id),
            "config": {"greeting": "hello", "token": "s3cret"},  # secrets decrypted for code
        }
        assert "ran ok attempt 1" in view.log_tail
        # A scheduled run goes through the same worker.
        await rig.tick(T0 + timedelta(seconds=1))
        await run_to_end(rig, advance=59)
        (scheduled,) = rig.runs(job="every")
        assert (scheduled.status, scheduled.trigger) == ("succeeded", "schedule")
        assert (
            rig.runner.store.get(scheduled.id).result["scheduled"]
            == (  # type: ignore[index]
                T0 + timedelta(minutes=1)
            ).isoformat()
        )

    with_rig(services, body)


def test_each_run_keeps_its_own_log_lines_after_many(services: Services, sources: Path) -> None:
    """The pool keeps a module's last 200 log lines; runs after that still get theirs."""
    name = install(services, sources, unique(), [job("chatty", "jobs/chatty.py")])

    async def body(rig: Rig) -> None:
        ids = []
        for _ in range(3):
            rig.clock.advance(seconds=1)
            run = rig.runner.run_now(name, "chatty")
            ids.append(run.id)
            await run_to_end(rig)
        for i, run_id in enumerate(ids):
            row = rig.runner.store.get(run_id)
            assert row.status == "succeeded"
            assert f"chatty run {run_id} line 249" in row.log_tail
            assert all(f"run {other} line" not in row.log_tail for other in ids[:i])

    with_rig(services, body)


def test_a_run_that_raises_fails_with_its_error(services: Services, sources: Path) -> None:
    name = install(services, sources, unique(), [job("boom", "jobs/boom.py")])

    async def body(rig: Rig) -> None:
        run = rig.runner.run_now(name, "boom")
        await run_to_end(rig)
        for _ in range(5):  # retries 0: nothing more, however long we wait
            await run_to_end(rig, advance=600)
        (row,) = rig.runs()
        assert row.status == "failed"
        assert row.error
        assert name in row.error
        assert row.result is None
        assert "RuntimeError: boom on purpose" in rig.runner.store.get(run.id).log_tail

    with_rig(services, body)


def test_a_run_past_its_timeout_is_stopped_and_timed_out(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=300), job("ok")],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 20}},
    )

    async def body(rig: Rig) -> None:
        run = rig.runner.run_now(name, "slow")
        started = time.monotonic()
        await run_to_end(rig)
        assert time.monotonic() - started < 10  # not the 20 s the handler sleeps
        row = rig.runner.store.get(run.id)
        assert row.status == "timed_out"
        assert row.error == "the run took longer than 300 ms"
        assert rig.runs(attempt=2) == []  # retries 0
        # The worker was stopped and the module still runs its jobs afterwards.
        after = rig.runner.run_now(name, "ok")
        await until(lambda: rig.pool.health[f"{name}@1.0.0"].down_until < time.monotonic())
        await run_to_end(rig, advance=1)
        assert status_of(rig, after.id) == "succeeded"

    with_rig(services, body)


def test_retries_back_off_and_the_last_attempt_succeeds(services: Services, sources: Path) -> None:
    name = install(services, sources, unique(), [job("flaky", "jobs/flaky.py", retries=3)])

    async def body(rig: Rig) -> None:
        first = rig.runner.run_now(name, "flaky")
        await run_to_end(rig)
        assert [r.status for r in rig.runs()] == ["failed", "queued"]
        await run_to_end(rig)  # attempt 2 is not due yet
        assert [r.status for r in rig.runs()] == ["failed", "queued"]
        await run_to_end(rig, advance=1.6)  # past 1 s x 1.5 jitter at most
        await run_to_end(rig, advance=3.1)  # past 2 s x 1.5
        for _ in range(3):
            await run_to_end(rig, advance=60)
        runs = rig.runs()
        assert [(r.attempt, r.status, r.trigger) for r in runs] == [
            (1, "failed", "manual"),
            (2, "failed", "retry"),
            (3, "succeeded", "retry"),
        ]
        assert {r.scheduled_at for r in runs} == {first.scheduled_at}  # one tick, three attempts
        gaps = [
            (runs[i + 1].not_before - runs[i].finished_at).total_seconds()  # type: ignore[operator]
            for i in range(2)
        ]
        assert 1.0 <= gaps[0] <= 1.5  # backoff_base x 2**0, plus up to 50 % jitter
        assert 2.0 <= gaps[1] <= 3.0  # backoff_base x 2**1, plus up to 50 % jitter
        assert rig.runner.store.get(runs[2].id).result == {"calls": 3, "attempt": 3}

    with_rig(services, body)


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
def test_retries_stop_after_the_last_attempt(
    services: Services, sources: Path, retries: int, attempts: int
) -> None:
    name = install(services, sources, unique(), [job("boom", "jobs/boom.py", retries=retries)])

    async def body(rig: Rig) -> None:
        rig.runner.run_now(name, "boom")
        for _ in range(6):
            await run_to_end(rig, advance=30)
        runs = rig.runs()
        assert [(r.attempt, r.status) for r in runs] == [
            (a, "failed") for a in range(1, attempts + 1)
        ]

    with_rig(services, body)


def test_a_timed_out_run_is_retried(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=200, retries=1)],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 20}},
    )

    async def body(rig: Rig) -> None:
        rig.runner.run_now(name, "slow")
        await run_to_end(rig)
        await until(lambda: rig.pool.health[f"{name}@1.0.0"].down_until < time.monotonic())
        await run_to_end(rig, advance=2)
        assert [(r.attempt, r.status) for r in rig.runs()] == [(1, "timed_out"), (2, "timed_out")]

    with_rig(services, body)


def test_concurrency_is_bounded_platform_wide_and_per_module(
    services: Services, sources: Path
) -> None:
    modules = [install(services, sources, unique(), [job("nap", "jobs/nap.py")]) for _ in range(3)]
    per_module = 4

    async def body(rig: Rig) -> None:
        for _ in range(per_module):
            for name in modules:
                rig.runner.run_now(name, "nap")
                rig.clock.advance(microseconds=1)  # a run now is unique per instant
        most = 0
        most_per_module = 0
        while True:
            rig.clock.advance(milliseconds=50)
            await rig.tick()
            running = rig.runs(status="running")
            most = max(most, len(running), len(rig.runner.tasks))
            for name in modules:
                most_per_module = max(most_per_module, sum(r.module == name for r in running))
            if len(rig.runs(status="succeeded")) == per_module * len(modules):
                break
            assert len(running) <= 3
            assert len(rig.runner.tasks) <= 3
            await asyncio.sleep(0.05)
        assert most_per_module <= 2
        # The handlers' own clocks: never more than 3 at once, nor 2 of one module.
        spans = [
            (r.module, rig.runner.store.get(r.id).result) for r in rig.runs(status="succeeded")
        ]
        events = sorted(
            [(s["started"], 1, m) for m, s in spans] + [(s["ended"], -1, m) for m, s in spans]
        )
        now_running = 0
        by_module = dict.fromkeys(modules, 0)
        peak = peak_module = 0
        for _, delta, module in events:
            now_running += delta
            by_module[module] += delta
            peak = max(peak, now_running)
            peak_module = max(peak_module, by_module[module])
        assert peak <= 3
        assert peak_module <= 2
        assert peak == 3  # the bound was reached, so the test shows it holds

    with_rig(services, body, concurrency=3, per_module=2)


def test_a_long_run_does_not_block_the_scheduler(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=30_000), job("every", schedule="* * * * *")],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 20}},
    )

    async def body(rig: Rig) -> None:
        slow = rig.runner.run_now(name, "slow")
        await rig.tick(T0)
        await until(lambda: status_of(rig, slow.id) == "running", what="the slow run to start")
        for second in (30, 60, 61):
            began = time.monotonic()
            await rig.tick(T0 + timedelta(seconds=second))
            assert time.monotonic() - began < 2.0  # the run sleeps 20 s
        (every,) = rig.runs(job="every")
        await until(lambda: status_of(rig, every.id) == "succeeded", what="the scheduled run")
        assert status_of(rig, slow.id) == "running"
        await rig.runner.cancel(slow.id)

    with_rig(services, body)


def test_a_cancelled_queued_run_never_starts(services: Services, sources: Path) -> None:
    name = install(services, sources, unique(), [job("ok")])

    async def body(rig: Rig) -> None:
        run = rig.runner.run_now(name, "ok")
        view = await rig.runner.cancel(run.id)
        assert (view.status, view.error, view.finished_at) == ("cancelled", "cancelled", T0)
        for _ in range(3):
            await run_to_end(rig, advance=5)
        (row,) = rig.runs()
        assert (row.status, row.started_at) == ("cancelled", None)
        assert rig.pool.workers == {}  # no worker was even started
        with pytest.raises(Conflict):
            await rig.runner.cancel(run.id)

    with_rig(services, body)


def test_a_cancelled_running_run_stays_cancelled(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=30_000, retries=2)],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 1.5}},
    )

    async def body(rig: Rig) -> None:
        # Cancelled here: the run's task is cancelled at once.
        here = rig.runner.run_now(name, "slow")
        await rig.tick()
        await until(lambda: status_of(rig, here.id) == "running")
        view = await rig.runner.cancel(here.id)
        assert view.status == "cancelled"
        await rig.runner.drain()
        assert rig.runner.tasks == {}
        # Cancelled by another process (the API of another server): the worker answers
        # later, and the answer does not overwrite the cancellation.
        rig.clock.advance(seconds=1)
        there = rig.runner.run_now(name, "slow")
        await rig.tick()
        await until(lambda: status_of(rig, there.id) == "running")
        rig.runner.store.cancel(there.id, rig.clock())
        await rig.runner.drain()  # the handler finishes its 1.5 s and answers
        for _ in range(3):
            await run_to_end(rig, advance=30)
        for run_id in (here.id, there.id):
            row = rig.runner.store.get(run_id)
            assert (row.status, row.result, row.error) == ("cancelled", None, "cancelled")
        assert len(rig.runs()) == 2  # a cancelled run is not retried

    with_rig(services, body)


def test_disabling_cancels_running_runs(services: Services, sources: Path) -> None:
    name = install(
        services,
        sources,
        unique(),
        [job("slow", "jobs/slow.py", timeout=30_000), job("ok")],
        config={"sleep": {"type": "number", "label": "Sleep", "default": 20}},
    )

    async def body(rig: Rig) -> None:
        slow = rig.runner.run_now(name, "slow")
        await rig.tick()
        await until(lambda: status_of(rig, slow.id) == "running")
        rig.clock.advance(seconds=1)
        queued = rig.runner.run_now(name, "ok")
        rig.clock.advance(seconds=1)
        set_status(services, name, Status.DISABLED)
        began = time.monotonic()
        await rig.tick()
        await rig.runner.drain()
        assert time.monotonic() - began < 5  # not the 20 s the handler sleeps
        for run_id in (slow.id, queued.id):
            row = rig.runner.store.get(run_id)
            assert row.status == "cancelled"
            assert row.error == "cancelled: the module was disabled"
        assert rig.runs(status="running") == []

    with_rig(services, body)


def test_queued_runs_nothing_can_start_do_not_block_the_queue(
    services: Services, sources: Path
) -> None:
    """Runs left queued for a module that is gone (stopped while the scheduler was down)."""
    name = install(services, sources, unique(), [job("ok")])
    store = services.jobs.store
    for i in range(40):  # more than `ready` looks at (4 x the free slots)
        store.enqueue("gone-module", "j", "1.0.0", T0 - timedelta(minutes=i), trigger="schedule")

    async def body(rig: Rig) -> None:
        run = rig.runner.run_now(name, "ok")
        await run_to_end(rig)
        assert status_of(rig, run.id) == "succeeded"
        assert {r.status for r in rig.runs(module="gone-module")} == {"cancelled"}

    with_rig(services, body, concurrency=2)


def test_a_run_cancelled_while_its_worker_starts_does_not_wedge_the_module(
    services: Services, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the pool's call itself here could leave the start waiting forever for the
    pipes of a half-started sandbox, holding the module's start lock (seen under load)."""
    name = install(services, sources, unique(), [job("ok")])
    starting = asyncio.Event()
    create = asyncio.create_subprocess_exec

    async def spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        starting.set()  # the cancel lands in the middle of starting the worker
        return await create(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)

    async def body(rig: Rig) -> None:
        # Cancel at several moments of the start (bwrap's own setup is the risky part).
        for delay in [i * 0.004 for i in range(16)]:
            starting.clear()
            rig.clock.advance(seconds=1)
            run = rig.runner.run_now(name, "ok")
            await rig.tick()
            await asyncio.wait_for(starting.wait(), 15)
            await asyncio.sleep(delay)
            with contextlib.suppress(Conflict):  # (it may be done already)
                await rig.runner.cancel(run.id)
            await asyncio.wait_for(rig.runner.drain(), 10)
            assert status_of(rig, run.id) in ("cancelled", "succeeded")
            await rig.pool.stop_module(name)  # the next run starts a worker again
        # The module's worker still starts and runs its jobs.
        rig.clock.advance(seconds=1)
        again = rig.runner.run_now(name, "ok")
        await rig.tick()
        await asyncio.wait_for(rig.runner.drain(), 15)
        assert status_of(rig, again.id) == "succeeded"
        assert rig.runner.tasks == {}
        assert rig.runner._module_load[name] == 0

    with_rig(services, body)
