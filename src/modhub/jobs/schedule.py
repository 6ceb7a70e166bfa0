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
# How far ahead a change that turns the clock back is looked for (no zone turns it back by
# more than a few hours).
_AHEAD = timedelta(hours=6)


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
    """Return the first fire time strictly after `after` (UTC), or None if unscheduled.

    Cron times are wall-clock times in the job's zone, read as Vixie cron and cronie do
    across daylight-saving changes. A fixed-time job fires once when its local time happens
    twice (the first time) and, when its time is skipped, once as the clock leaves the gap.
    A wildcard job (minute or hour field `*`, `*/n`, `@hourly`) fires whenever the clock
    shows a matching time: in both passes of a repeated hour, never in a gap.
    """
    if job.schedule is None:
        return None
    after = after.astimezone(UTC)
    if job.timezone in (None, "UTC"):  # no daylight saving: the plain cron sequence
        fire: datetime = croniter(job.schedule, after.replace(tzinfo=None)).get_next(datetime)
        return fire.replace(tzinfo=UTC)
    zone = ZoneInfo(job.timezone)
    if _wildcard(job.schedule):
        return _next_on_the_clock(job.schedule, zone, after)
    return _next_fixed(job.schedule, zone, after)


def _wildcard(schedule: str) -> bool:
    """Return whether cron runs `schedule` by the clock through daylight-saving changes: its
    minute or hour field starts with `*` (Vixie cron's MIN_STAR and HR_STAR)."""
    fields = schedule.split()
    if len(fields) != 5:
        return fields == ["@hourly"]
    return fields[0].startswith("*") or fields[1].startswith("*")


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """Return the local time the clock shows at `moment`, without its zone."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _moments(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """Return the moments (UTC) the clock shows `wall`: one, two in a repeated hour, or
    none in a gap."""
    found: list[datetime] = []
    for fold in (0, 1):
        moment = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if _wall(moment, zone) == wall and moment not in found:
            found.append(moment)
    return found


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the moment the clock jumps over `wall` (a time in a gap): the gap's end."""
    # fold=1 reads `wall` with the offset after the change and lands before it; fold=0 with
    # the offset before and lands after. The change is the first second in between with
    # the later offset.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle -= timedelta(microseconds=middle.microsecond)
        if middle <= low:
            break
        if middle.astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return high


def _next_fixed(schedule: str, zone: ZoneInfo, after: datetime) -> datetime:
    # Each matching wall time maps to its first moment, or to the gap's end when skipped.
    # That map never goes backwards, and the wall time of `after` maps to `after` or
    # earlier, so the first matching wall time after it that maps after `after` is the one.
    # Only inside a repeated hour do a few map before `after` (their first pass is over).
    times = croniter(schedule, _wall(after, zone))
    while True:
        wall: datetime = times.get_next(datetime)
        moments = _moments(wall, zone)
        fire = moments[0] if moments else _gap_end(wall, zone)
        if fire > after:
            return fire


def _next_on_the_clock(schedule: str, zone: ZoneInfo, after: datetime) -> datetime:
    # Every moment whose wall time matches, both passes of a repeated hour included. The
    # first moment of each wall time never goes backwards as wall times go forwards, but a
    # second pass comes after later wall times' first ones: before a change that turns the
    # clock back (within the next day), start from the earliest wall time it shows again.
    start = _wall(after, zone)
    now, soon = after.astimezone(zone).utcoffset(), (after + _AHEAD).astimezone(zone).utcoffset()
    if now is not None and soon is not None and soon < now:
        start -= now - soon
    times = croniter(schedule, start)
    best: datetime | None = None
    while True:
        wall: datetime = times.get_next(datetime)
        moments = _moments(wall, zone)
        if not moments:
            continue  # skipped by the clock
        if best is not None and moments[0] >= best:
            return best  # every later wall time comes later still
        later = [m for m in moments if m > after]
        if later and (best is None or later[0] < best):
            best = later[0]
            if best == moments[0]:
                return best


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
