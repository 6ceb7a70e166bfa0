"""A job runner's graceful stop: runs in flight get a grace period, the rest go back.

On SIGTERM the runner claims nothing more, and its heartbeat goes on, so its lease, and with
it the runs still going, stay its own while they finish. At the deadline the runs still
going are interrupted: the lease is given up and those runs are failed as "interrupted: the
server stopped", their next attempt queued (as their job's retries allow) for any runner of
the cluster to claim, exactly as when another node finds a runner gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modhub.jobs.runner import JobRunner

log = logging.getLogger("modhub.jobs")


async def stop(runner: JobRunner, grace: float) -> int:
    """Stop `runner` claiming runs, let its runs in flight finish within `grace` seconds,
    then interrupt the rest; return how many were interrupted."""
    runner.lease.stop_claiming()
    running = [task for task in runner.tasks.values() if not task.done()]
    if running:
        log.info("waiting up to %.0f s for %d job run(s) in flight", grace, len(running))
        await asyncio.wait(running, timeout=grace)
    left = [run_id for run_id, task in runner.tasks.items() if not task.done()]
    interrupted = 0
    if left:
        interrupted = await asyncio.to_thread(_interrupt, runner)
        log.warning(
            "%d job run(s) still going after %.0f s: interrupted, retried by any runner"
            " as their jobs' retries allow",
            len(left),
            grace,
        )
        for run_id in left:
            task = runner.tasks.get(run_id)
            if task is not None:
                task.cancel()  # its row is failed already: its outcome is not recorded
    await runner.drain()  # the finished runs' outcomes recorded before the workers stop
    return interrupted


def _interrupt(runner: JobRunner) -> int:
    """Give the lease up, then fail this runner's running runs (now owned by no live runner)
    and queue their next attempts (blocking)."""
    lease = runner.lease
    lease.release()
    return runner.store.interrupt_running(runner.clock(), "", lease.ttl, lease.retry)
