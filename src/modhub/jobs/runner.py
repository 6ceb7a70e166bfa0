"""The scheduler and the executor: jobs fire on their cron schedule and run in workers
(one run's execution: `execution.py`).

Both are driven by `tick(now)`, so tests move a fake clock instead of sleeping; `run()`
calls it every `interval` seconds with the real clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from modhub.errors import Conflict, HandlerMissing, ModhubError, NotFound
from modhub.jobs.claim import Claim
from modhub.jobs.dispatch import ConfigReader, Outcome, run_round
from modhub.jobs.execution import Clock, FailedListener, RunExecutor, utc_now
from modhub.jobs.lease import Lease
from modhub.jobs.schedule import SKIP_GRACE, JobSpec, next_fire, next_fires
from modhub.jobs.store import Interrupted, RunStore, RunView
from modhub.manifest import Manifest
from modhub.registry import Registry, Status
from modhub.sandbox import ModuleRuntime, WorkerPool

log = logging.getLogger("modhub.jobs")
RuntimeFor = Callable[[Manifest, Path | None], ModuleRuntime | None]


@dataclass(frozen=True)
class JobLimits:
    """How many runs execute at once, how retries back off, how often the runner renews
    its lease (the lease expires after `lease.LEASE_BEATS` heartbeats)."""

    concurrency: int = 8
    per_module: int = 2
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    retention: timedelta = timedelta(days=30)
    heartbeat: timedelta = timedelta(seconds=10)


class JobRunner:
    """Fires every enabled module's jobs once per tick and executes queued runs."""

    def __init__(
        self,
        registry: Registry,
        pool: WorkerPool,
        runtime_for: RuntimeFor,
        limits: JobLimits | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.runtime_for = runtime_for
        self.limits = limits or JobLimits()
        self.clock = clock
        self.store = RunStore(registry.db)
        self.lease = Lease(self.store, self.limits.heartbeat, self._retry_at)
        self.specs: dict[tuple[str, str], JobSpec] = {}
        self.last: dict[tuple[str, str], datetime] = {}
        self.tasks: dict[int, asyncio.Task[Outcome]] = {}
        self._run_modules: dict[int, str] = {}
        self._next_at: dict[tuple[str, str], tuple[datetime, object, datetime]] = {}
        # One round at a time, per event loop: a loop that stopped mid-round (a test's
        # server thread) must not leave the next loop a lock it can never take.
        self._starting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._module_load: dict[str, int] = defaultdict(int)  # this runner's runs in flight
        self._fingerprint: object = None
        self._pruned_at: datetime | None = None
        self._loaded = False
        self._woken: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._outcomes: list[Outcome] = []  # finished runs waiting for a round to record
        # Told of each run that failed its last attempt (the platform's modhub/job.failed).
        self.failed: list[FailedListener] = []
        self._settler: asyncio.Task[None] | None = None
        self._full = False  # the last round claimed all the room it had: more may be ready
        self._claimer: asyncio.Task[None] | None = None  # a round asked for by `claim_soon`
        self._claim_again = False  # asked again while that round was under way
        self._configs = ConfigReader(registry.box)
        self.executor = RunExecutor(
            pool, clock, self.limits.backoff_base, self.limits.backoff_max, self.failed
        )
        self._runnable: tuple[object, dict[tuple[str, str], str]] = (None, {})

    # -- what is scheduled -----------------------------------------------------------------

    def refresh(self, now: datetime) -> None:
        """Load the jobs of every ENABLED module; cancel runs of modules that stopped."""
        seen_at = utc_now()  # the real clock, as `JobRun.created_at`
        specs: dict[tuple[str, str], JobSpec] = {}
        offset = 0
        while True:
            page = self.registry.list_modules(status=Status.ENABLED, limit=500, offset=offset)
            for summary in page.items:
                try:
                    manifest, row = self.registry.version_info(summary.name)
                except NotFound:
                    continue
                runtime = self.runtime_for(manifest, Path(row.path) if row.path else None)
                for job in manifest.capabilities.jobs.handlers:
                    specs[(manifest.name, job.name)] = JobSpec(
                        manifest.name, manifest.version, job, runtime
                    )
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        versions = {m: s.version for (m, _), s in specs.items()}
        for module in {m for m, _ in self.specs} - set(versions):
            cancelled = self.store.cancel_module(module, now)
            for run_id, task in list(self.tasks.items()):
                if self._run_modules.get(run_id) == module:
                    task.cancel()
            if cancelled:
                log.info("cancelled %d run(s) of %s: no longer enabled", cancelled, module)
        # Queued runs no version here can start (an upgraded module's, or a module's that
        # stopped while this process was down) would never run and would fill `ready`.
        stale = self.store.cancel_stale(versions, seen_at, now)
        if stale:
            log.info("cancelled %d queued run(s) of modules not enabled at their version", stale)
        for key in specs.keys() - self.specs.keys():
            # At start-up a job resumes after its last fired tick (missed ticks coalesce or
            # are skipped); a job that appears later (its module was just enabled) starts
            # from now: ticks while the module was disabled were not missed, but stopped.
            last = self.store.last_scheduled(*key) if not self._loaded else None
            self.last[key] = last or now
        self.specs = specs
        self._loaded = True

    def jobs_of(self, module: str, count: int = 3) -> list[dict[str, Any]]:
        """Return a module's jobs with their next fire times (for the API)."""
        manifest, row = self.registry.version_info(module)
        runnable = row.path is not None and self.registry.get(module).status == Status.ENABLED
        now = self.clock()
        return [
            {
                "name": job.name,
                "handler": job.handler,
                "schedule": job.schedule,
                "timezone": job.timezone or "UTC",
                "timeout": job.timeout,
                "retries": job.retries,
                "misfire": job.misfire,
                "nextRuns": [t.isoformat() for t in next_fires(job, now, count)]
                if runnable
                else [],
            }
            for job in manifest.capabilities.jobs.handlers
        ]

    # -- firing ----------------------------------------------------------------------------

    def fire_due(self, now: datetime) -> list[int]:
        """Enqueue one run for every job whose tick has come (once across all schedulers);
        return the ids of the runs this scheduler inserted.

        Each job's next fire time is kept, so a job whose time has not come costs one
        comparison; ticks missed since the last one are coalesced (or, with
        `misfire: "skip"`, dropped when older than a minute).
        """
        rows: list[dict[str, Any]] = []
        for key, spec in self.specs.items():
            if spec.runtime is None or spec.job.schedule is None:
                continue  # a bare manifest has no code; an unscheduled job runs on demand
            last = self.last.get(key, now)
            cached = self._next_at.get(key)
            if cached is None or cached[0] != last or cached[1] is not spec.job:
                fire = next_fire(spec.job, last)
                if fire is None:
                    continue
                cached = (last, spec.job, fire)
            if cached[2] > now:
                self._next_at[key] = cached
                continue
            latest, following = cached[2], next_fire(spec.job, cached[2])
            while following is not None and following <= now:
                latest, following = following, next_fire(spec.job, following)
            self.last[key] = latest
            if following is not None:
                self._next_at[key] = (latest, spec.job, following)
            if spec.job.misfire == "skip" and now - latest > SKIP_GRACE:
                continue
            rows.append(
                {
                    "module": spec.module,
                    "job": spec.job.name,
                    "version": spec.version,
                    "trigger": "schedule",
                    "scheduled_at": latest,
                    "not_before": latest,
                    "attempt": 1,
                    "status": "queued",
                    "log": "",
                    "created_at": now,
                }
            )
        return self.store.enqueue_many(rows) if rows else []

    def run_now(self, module: str, job: str) -> RunView:
        """Queue a run of `job` right now (the API's "run now").

        Asks the registry, not `self.specs`: those are loaded by `tick`, which a process
        with the scheduler off never runs, and which lags an enable by up to a tick.
        """
        manifest, row = self.registry.version_info(module)
        if not any(j.name == job for j in manifest.capabilities.jobs.handlers):
            raise NotFound(f"module '{module}' has no job '{job}'")
        status = Status(self.registry.get(module).status)
        if status != Status.ENABLED:
            raise Conflict(
                f"module '{module}' is {status}, not ENABLED: its jobs cannot run",
                module=module,
                moduleStatus=str(status),
            )
        if row.path is None:
            raise HandlerMissing(f"module '{module}' has no code: job '{job}' cannot run")
        now = self.clock()
        run = self.store.enqueue(module, job, manifest.version, now, trigger="manual")
        if run is None:
            raise ModhubError("could not queue the run; try again")
        self.wake()  # started at once, not at the next tick (when this process runs jobs)
        return run

    # -- executing -------------------------------------------------------------------------

    async def execute_ready(self, now: datetime) -> None:
        """Record the outcomes of finished runs, then start queued runs while there is
        room, platform-wide and per module."""
        loop = asyncio.get_running_loop()
        if self._starting is None or self._starting[0] is not loop:
            self._starting = (loop, asyncio.Lock())
        async with self._starting[1]:  # one round at a time, so the bounds hold
            await self._round(now)

    async def _round(self, now: datetime) -> None:
        outcomes, self._outcomes = self._outcomes, []
        settled = {o.run_id for o in outcomes}
        room = self.limits.concurrency - len(self.tasks.keys() - settled)
        if not self.lease.held(now):  # `tick` renews it first
            room = 0
        specs = self.specs  # runs of modules not enabled at their version stay queued
        runnable = self._runnable_of(specs)
        try:
            done = await asyncio.to_thread(
                run_round,
                self.store.db,
                outcomes,
                self.store.insert_new(),
                self._configs,
                now=now,
                owner=self.lease.owner.id,
                room=room if runnable else 0,
                per_module=self.limits.per_module,  # counted in the database: for all runners
                runnable=runnable,
                probe=not self._full,
            )
        except BaseException:
            self._outcomes[:0] = outcomes  # recorded by the next round
            raise
        # The slot is free once the run's row is no longer running: the rows never show
        # more running runs than the bounds allow.
        for outcome in outcomes:
            self.tasks.pop(outcome.run_id, None)
            module = self._run_modules.pop(outcome.run_id, None)
            if module is not None:
                self._module_load[module] -= 1
        self._full = room > 0 and len(done.claims) == room
        for run in done.claims:
            spec = specs[(run.module, run.job)]
            self._module_load[run.module] += 1
            self._run_modules[run.id] = run.module
            config = done.configs.get(run.module)
            task = asyncio.create_task(self.executor.execute(run, spec, config))
            task.add_done_callback(functools.partial(self._report, run, spec))
            self.tasks[run.id] = task

    def _runnable_of(self, specs: dict[tuple[str, str], JobSpec]) -> dict[tuple[str, str], str]:
        """Return the version of each job this runner can run (kept until `refresh`)."""
        if self._runnable[0] is not specs:
            self._runnable = (
                specs,
                {k: s.version for k, s in specs.items() if s.runtime is not None},
            )
        return self._runnable[1]

    def _settle(self) -> None:
        """Have a round record the outcomes waiting (and fill the slots they free) soon:
        runs that finish while a round is under way wait for the next one, together."""
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_all())

    async def _settle_all(self) -> None:
        while self._outcomes:
            try:
                await self.execute_ready(self.clock())
            except Exception:
                log.exception("could not record finished job runs; the next tick retries")
                return

    def _report(self, run: Claim, spec: JobSpec, task: asyncio.Task[Outcome]) -> None:
        """Queue a finished run's outcome for the next round (which records it with those of
        the runs finished meanwhile); the run keeps its slot until then."""
        if task.cancelled():  # cancelled before it began
            outcome = Outcome(run.id, "cancelled", self.clock(), error="cancelled")
        elif (exc := task.exception()) is not None:  # a bug of ours: the run still ends
            log.error("job run %s failed unexpectedly", run.id, exc_info=exc)
            outcome = Outcome(run.id, "failed", self.clock(), error=f"internal error: {exc}")
        else:
            outcome = task.result()
        self._outcomes.append(outcome)
        self._settle()

    def _retry_at(self, run: Interrupted, now: datetime) -> datetime | None:
        """Return when an interrupted attempt is tried again, as a failed one is; None when
        its retries are spent or its job is not enabled here at its version."""
        spec = self.specs.get((run.module, run.job))
        if spec is None or spec.version != run.version or run.attempt > spec.job.retries:
            return None
        return now + self.executor.backoff(run.attempt)

    async def cancel(self, run_id: int) -> RunView:
        """Cancel a run: a queued one never starts, a running one is abandoned."""
        view = await asyncio.to_thread(self.store.cancel, run_id, self.clock())
        task = self.tasks.get(run_id)
        if task is not None:
            task.cancel()
        return view

    # -- the loop --------------------------------------------------------------------------

    async def tick(self, now: datetime) -> None:
        """Do one round: reload jobs if the registry moved, renew the lease (and fail, or
        retry, runs of runners that are gone) when the heartbeat is due, fire due ticks,
        start runs. The jobs are loaded first: they say how often a run may be retried."""
        fingerprint = await asyncio.to_thread(self.registry.fingerprint)
        if fingerprint != self._fingerprint:
            await asyncio.to_thread(self.refresh, now)
            self._fingerprint = fingerprint
        if self.lease.due(now):
            await asyncio.to_thread(self.lease.keep, now)
        await asyncio.to_thread(self.fire_due, now)
        await self.execute_ready(now)
        if self._pruned_at is None or now - self._pruned_at > timedelta(hours=1):
            self._pruned_at = now
            await asyncio.to_thread(self.store.prune, self.limits.retention, now)

    def wake(self) -> None:
        """Tick now: another process changed the registry (safe from any thread)."""
        woken = self._woken
        if woken is not None:
            loop, event = woken
            loop.call_soon_threadsafe(event.set)

    def claim_soon(self) -> None:
        """Claim queued runs now, without a whole tick: some node queued runs (its NOTIFY
        on `JOBS_CHANNEL`). Safe from any thread; does nothing unless `run` is running."""
        woken = self._woken
        if woken is not None:
            woken[0].call_soon_threadsafe(self._start_claimer)

    def _start_claimer(self) -> None:
        if self._claimer is not None and not self._claimer.done():
            self._claim_again = True  # that round may have looked before these runs were in
            return
        self._claimer = asyncio.create_task(self._claim_rounds())

    async def _claim_rounds(self) -> None:
        self._claim_again = True
        while self._claim_again:
            self._claim_again = False
            try:
                await self.execute_ready(self.clock())
            except Exception:
                log.exception("could not claim queued job runs; the next tick retries")
                return

    async def run(self, interval: float = 1.0) -> None:
        """Tick forever with the real clock; give the lease up when stopped."""
        self.lease.resume()
        event = asyncio.Event()
        self._woken = (asyncio.get_running_loop(), event)
        try:
            while True:
                try:
                    # The first tick takes the lease and fails the runs a crash of this
                    # process left running (`Lease.keep`); later ticks renew it.
                    await self.tick(self.clock())
                except Exception:
                    log.exception("job scheduler tick failed")
                # Tick on the clock's whole seconds: a minute's runs fire ms after it starts;
                # or at once when woken (another node changed the registry).
                now = self.clock()
                with suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), interval - (now.timestamp() % interval))
                event.clear()
        finally:
            self._woken = None  # no claim after the lease is given up
            if self._claimer is not None:
                self._claimer.cancel()
            try:
                self.lease.release()  # here and now: a cancelled task may not run again
            except Exception:
                log.exception("could not release the job runner's lease")

    async def drain(self) -> None:
        """Wait for every started run to finish and be recorded (tests and shutdown)."""
        while self.tasks or self._outcomes:
            waiting: list[asyncio.Future[Any]] = [t for t in self.tasks.values() if not t.done()]
            if self._settler is not None and not self._settler.done():
                waiting.append(self._settler)
            if waiting:
                await asyncio.gather(*waiting, return_exceptions=True)
            else:  # outcomes a failed round left, or a round under way: wait for it
                await self.execute_ready(self.clock())
