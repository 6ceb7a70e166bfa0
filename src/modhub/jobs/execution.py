"""One job run in its module's worker: the handler called with its context, the outcome
the next round records, the attempt a failure earns (after a backoff with jitter), and
the platform told of a run that failed its last attempt (`modhub/job.failed`).

The runner (`runner.py`) decides which runs start and records what they did; this module
only runs one and says how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from modhub import metrics
from modhub.errors import HandlerTimeout, ModhubError, NotFound
from modhub.jobs.claim import Claim
from modhub.jobs.dispatch import Outcome
from modhub.jobs.schedule import JobSpec
from modhub.sandbox import WorkerPool

log = logging.getLogger("modhub.jobs")
Clock = Callable[[], datetime]
FailedListener = Callable[[dict[str, Any]], Awaitable[None]]


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def backoff(attempt: int, base: float, most: float) -> timedelta:
    """Return how long failed attempt `attempt` waits for the next one: doubling from
    `base` seconds up to `most`, plus up to half again of jitter, so retries do not
    stampede (job runs and event deliveries alike)."""
    delay = min(most, base * 2 ** (attempt - 1))
    delay *= 1 + random.random() * 0.5
    return timedelta(seconds=delay)


def _after(lines: Sequence[str], mark: str | None) -> list[str]:
    """Return the lines appended after `mark`, found by identity: the pool keeps a module's
    last lines only, so once it holds that many its length no longer counts new ones."""
    kept = list(lines)
    for i in range(len(kept) - 1, -1, -1):
        if kept[i] is mark:
            return kept[i + 1 :]
    return kept  # no mark, or it fell out: every line kept is new


def _consume(call: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not call.cancelled():
        call.exception()


class RunExecutor:
    """Runs one claimed run at a time per call of `execute`, in `pool`'s workers."""

    def __init__(
        self,
        pool: WorkerPool,
        clock: Clock,
        backoff_base: float,
        backoff_max: float,
        failed: list[FailedListener],
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.failed = failed  # the runner's list: listeners added later are told too

    def backoff(self, attempt: int) -> timedelta:
        """Return how long failed attempt `attempt` waits for the next one."""
        return backoff(attempt, self.backoff_base, self.backoff_max)

    async def execute(self, run: Claim, spec: JobSpec, config: dict[str, Any] | None) -> Outcome:
        """Run `run`'s handler; return its outcome, with the next attempt's row when the
        run failed or timed out and its job has retries left."""
        result: Any = None
        error: str | None = "cancelled"
        status = "cancelled"
        logs = self.pool.logs[spec.module]
        mark = logs[-1] if logs else None  # the module's last log line before this run
        timer = metrics.job_started(
            spec.module, spec.job.name, run.scheduled_at, self.clock(), run.attempt
        )
        try:
            status, result, error = await self._call(run, spec, config)
            # The worker writes its log (stderr) before its answer (stdout), but the two
            # pipes are read by different tasks: give the log reader a moment to catch up.
            for _ in range(3):  # the lines are in its pipe already: a few loop turns do
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            status, result, error = "cancelled", None, "cancelled"
        now = self.clock()
        timer.done(status)
        retry = None
        if status in ("failed", "timed_out") and run.attempt <= spec.job.retries:
            retry = {
                "module": spec.module,
                "job": spec.job.name,
                "version": spec.version,
                "trigger": "retry",
                "scheduled_at": run.scheduled_at,
                "not_before": now + self.backoff(run.attempt),
                "attempt": run.attempt + 1,
                "status": "queued",
                "log": "",
                "created_at": utc_now(),
            }
        lines = "\n".join(_after(logs, mark))
        if retry is None and status in ("failed", "timed_out"):
            await self._tell_failed(run, spec, status, error)
        return Outcome(run.id, status, now, result, error, lines, retry)

    async def _tell_failed(self, run: Claim, spec: JobSpec, status: str, error: str | None) -> None:
        failure = {
            "module": spec.module,
            "job": spec.job.name,
            "runId": run.id,
            "attempt": run.attempt,
            "status": status,
            "error": error,
        }
        for listener in self.failed:
            try:
                await listener(failure)
            except Exception:  # a listener's failure must not lose the run's outcome
                log.exception("telling of the failed run %s failed", run.id)

    async def _call(
        self, run: Claim, spec: JobSpec, config: dict[str, Any] | None
    ) -> tuple[str, Any, str | None]:
        """Run the handler in the module's worker; return (status, result, error)."""
        assert spec.runtime is not None
        try:
            if config is None:
                raise NotFound(f"no module named '{spec.module}'", module=spec.module)
            call = asyncio.ensure_future(
                self.pool.call(
                    spec.runtime,
                    "job",
                    spec.job.handler,
                    {
                        "job": spec.job.name,
                        "scheduledTime": run.scheduled_at.isoformat(),
                        "attempt": run.attempt,
                        "runId": str(run.id),
                    },
                    config,
                    timeout_ms=spec.timeout_ms,
                )
            )
            call.add_done_callback(_consume)
            # Cancelling abandons the call, it does not cancel it: cancelled while the pool
            # starts the worker, the start never ends (the half-started sandbox keeps the
            # pipes open) and holds the module's start lock for good.
            answer = await asyncio.shield(call)
            return "succeeded", answer.get("result"), None
        except HandlerTimeout:
            return "timed_out", None, f"the run took longer than {spec.timeout_ms} ms"
        except ModhubError as exc:
            return "failed", None, exc.detail
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not kill the runner
            log.exception("job run %s failed unexpectedly", run.id)
            return "failed", None, f"internal error: {exc}"
