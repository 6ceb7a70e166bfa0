"""When a job fires: cron times in the job's time zone, and what a misfire becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from modhub.manifest.model import Job
from modhub.sandbox import ModuleRuntime

DEFAULT_TIMEOUT_MS = 300_000
SKIP_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class JobSpec:
    """One job of one enabled module version."""

    module: str
    version: str
    job: Job
    runtime: ModuleRuntime | None

    @property
    def timeout_ms(self) -> int:
        """Return the run timeout: the job's, or the platform default."""
        return self.job.timeout or DEFAULT_TIMEOUT_MS


def next_fire(job: Job, after: datetime) -> datetime | None:
    """Return the first fire time strictly after `after` (UTC), or None if unscheduled."""
    if job.schedule is None:
        return None
    zone = ZoneInfo(job.timezone or "UTC")
    start = after.astimezone(zone)
    fire: datetime = croniter(job.schedule, start).get_next(datetime)
    return fire.astimezone(UTC)


def next_fires(job: Job, after: datetime, count: int) -> list[datetime]:
    """Return the next `count` fire times after `after`."""
    fires: list[datetime] = []
    current = after
    while len(fires) < count:
        fire = next_fire(job, current)
        if fire is None:
            break
        fires.append(fire)
        current = fire
    return fires


def due(job: Job, last: datetime, now: datetime) -> datetime | None:
    """Return the tick to fire now, given the last fired tick, or None.

    Ticks missed since `last` are coalesced into the latest one (the default); with
    `misfire: "skip"` a tick older than a minute is dropped instead.
    """
    fire = next_fire(job, last)
    if fire is None or fire > now:
        return None
    latest = fire
    while (following := next_fire(job, latest)) is not None and following <= now:
        latest = following
    if job.misfire == "skip" and now - latest > SKIP_GRACE:
        return None
    return latest


def skipped_to(job: Job, last: datetime, now: datetime) -> datetime:
    """Return the tick a scheduler should remember after dropping misfires."""
    latest = last
    while (following := next_fire(job, latest)) is not None and following <= now:
        latest = following
    return latest
