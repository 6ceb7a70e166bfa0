"""Daylight-saving changes: the rules of Vixie cron and cronie, on fixed datetimes.

A fixed-time job (its minute and hour fields are not wildcards) fires once when its local
time happens twice (the first time), and once right after the gap when its local time is
skipped. A wildcard job (`0 * * * *`, `*/15 * * * *`, `* 2 * * *`, `@hourly`) fires at every
real moment the local clock matches: both passes of a repeated hour, never in a gap.

The schedule tests use no database; the last test drives a scheduler through both changes
on a fake clock, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from modhub.jobs.schedule import due, next_fire, next_fires
from modhub.manifest.model import Job
from modhub.services import Services
from tests.jobs.conftest import Rig, install, job, unique, with_rig

PARIS = "Europe/Paris"
MINUTE = timedelta(minutes=1)


def make_job(schedule: str, timezone: str = PARIS) -> Job:
    return Job.model_validate(
        {"name": "j", "handler": "jobs/j.py", "schedule": schedule, "timezone": timezone}
    )


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(moments: list[datetime], zone: str = PARIS) -> list[str]:
    """Return moments as local wall times with their offset, for readable failures."""
    return [m.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for m in moments]


# -- Paris, 2026: summer time starts 29 March (02:00 → 03:00) and ends 25 October (03:00 → 02:00)


def test_a_local_time_that_happens_twice_fires_once_the_first_time() -> None:
    nightly = make_job("30 2 * * *")
    fires = next_fires(nightly, at(2026, 10, 23, 12), 4)
    assert local(fires) == [
        "10-24 02:30+0200",
        "10-25 02:30+0200",  # the first 02:30; the second (01:30 UTC) does not fire
        "10-26 02:30+0100",
        "10-27 02:30+0100",
    ]
    assert fires[1] == at(2026, 10, 25, 0, 30)
    # Asked from the tick it fired, or from inside the repeated hour, the next is tomorrow.
    for after in (at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 0), at(2026, 10, 25, 1, 29)):
        assert next_fire(nightly, after) == at(2026, 10, 26, 1, 30)


def test_a_local_time_that_is_skipped_fires_right_after_the_gap() -> None:
    nightly = make_job("30 2 * * *")
    fires = next_fires(nightly, at(2026, 3, 27, 12), 4)
    assert local(fires) == [
        "03-28 02:30+0100",
        "03-29 03:00+0200",  # 02:30 does not exist: it fires when the clock reaches 03:00
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]
    assert fires[1] == at(2026, 3, 29, 1, 0)


def test_several_skipped_times_of_one_job_fire_once_after_the_gap() -> None:
    fires = next_fires(make_job("0,20,40 2 * * *"), at(2026, 3, 28, 12), 4)
    assert local(fires) == [
        "03-29 03:00+0200",
        "03-30 02:00+0200",
        "03-30 02:20+0200",
        "03-30 02:40+0200",
    ]
    # A job at 02:00 and 03:00 fires once at 03:00 that night: both times are that moment.
    assert local(next_fires(make_job("0 2,3 * * *"), at(2026, 3, 28, 12), 3)) == [
        "03-29 03:00+0200",
        "03-30 02:00+0200",
        "03-30 03:00+0200",
    ]


def test_wildcard_jobs_follow_the_clock_through_both_changes() -> None:
    hourly = make_job("0 * * * *")
    # Autumn: 02:00 happens twice and an hourly job runs each hour of real time.
    assert local(next_fires(hourly, at(2026, 10, 24, 23), 4)) == [
        "10-25 02:00+0200",
        "10-25 02:00+0100",
        "10-25 03:00+0100",
        "10-25 04:00+0100",
    ]
    # From the end of the first pass the next is the start of the second.
    assert next_fire(hourly, at(2026, 10, 25, 0, 40)) == at(2026, 10, 25, 1, 0)
    assert next_fires(make_job("*/30 * * * *"), at(2026, 10, 24, 23, 50), 6) == [
        at(2026, 10, 25, 0, 0) + timedelta(minutes=30 * i) for i in range(6)
    ]
    # Spring: the skipped hour's ticks are not made up.
    assert local(next_fires(make_job("30 * * * *"), at(2026, 3, 29, 0), 2)) == [
        "03-29 01:30+0100",
        "03-29 03:30+0200",
    ]
    # A wildcard minute in a fixed hour: every minute of both 02:00 hours, none in spring.
    every_minute_at_two = make_job("* 2 * * *")
    autumn = next_fires(every_minute_at_two, at(2026, 10, 24, 12), 121)
    assert autumn[:120] == [at(2026, 10, 25, 0, 0) + i * MINUTE for i in range(120)]
    assert autumn[120] == at(2026, 10, 26, 1, 0)
    assert local(next_fires(every_minute_at_two, at(2026, 3, 28, 12), 1)) == ["03-30 02:00+0200"]


def test_due_does_not_fire_the_second_pass_of_a_repeated_time() -> None:
    nightly = make_job("30 2 * * *")
    first = at(2026, 10, 25, 0, 30)
    assert due(nightly, at(2026, 10, 24, 12), first) == first
    for now in (at(2026, 10, 25, 1, 30), at(2026, 10, 25, 1, 31), at(2026, 10, 26, 1, 29)):
        assert due(nightly, first, now) is None
    assert due(nightly, first, at(2026, 10, 26, 1, 30)) == at(2026, 10, 26, 1, 30)
    # Down across the gap: the skipped 02:30 is the tick to make up.
    assert due(nightly, at(2026, 3, 28, 1, 30), at(2026, 3, 29, 5)) == at(2026, 3, 29, 1)


def test_other_zones() -> None:
    # New York, 2026: 02:00 → 03:00 on 8 March, 02:00 → 01:00 on 1 November.
    york = "America/New_York"
    assert next_fire(make_job("30 2 * * *", york), at(2026, 3, 8)) == at(2026, 3, 8, 7, 0)
    assert next_fires(make_job("30 1 * * *", york), at(2026, 11, 1), 2) == [
        at(2026, 11, 1, 5, 30),  # 01:30 EDT; 01:30 EST (06:30 UTC) does not fire
        at(2026, 11, 2, 6, 30),
    ]
    # Lord Howe Island moves by half an hour: 02:00 → 02:30 on 4 October 2026.
    howe = "Australia/Lord_Howe"
    assert local(next_fires(make_job("15 2 * * *", howe), at(2026, 10, 3), 2), howe) == [
        "10-04 02:30+1100",
        "10-05 02:15+1100",
    ]
    # Santiago changes at midnight: @daily has no 00:00 on 6 September 2026.
    santiago = "America/Santiago"
    assert local(next_fires(make_job("@daily", santiago), at(2026, 9, 5, 12), 2), santiago) == [
        "09-06 01:00-0300",
        "09-07 00:00-0300",
    ]


# -- every change of 2026 in several zones, against a minute-by-minute reference ---------

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "UTC"]
SCHEDULES = [
    "30 2 * * *",
    "0 2 * * *",
    "59 1 * * *",
    "0,30 1-3 * * *",
    "45 1 * * *",
    "15 2 * * 0",
    "30 23 * * *",
    "@daily",
    "0 * * * *",
    "*/15 * * * *",
    "30 * * * *",
    "* 2 * * *",
    "@hourly",
]


def changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """Return the moments (UTC, to the minute) the zone's offset changes in `year`."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    while moment.year == year:
        step = moment + timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() != step.astimezone(zone).utcoffset():
            while moment.astimezone(zone).utcoffset() == step.astimezone(zone).utcoffset():
                moment += MINUTE
            found.append(moment + MINUTE)
        moment = step
    return found


def reference(schedule: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Return when Vixie cron would fire in (start, end), found by walking every minute."""
    fields = schedule.split()
    wildcard = schedule == "@hourly" or (len(fields) == 5 and "*" in fields[0][0] + fields[1][0])
    fires = []
    moment = start - timedelta(hours=6)
    seen = set()  # wall times the clock has shown already
    shown = moment.astimezone(zone).replace(tzinfo=None)
    while moment < end:
        moment += MINUTE
        wall = moment.astimezone(zone).replace(tzinfo=None)
        skipped = []  # wall times the clock jumped over to reach this one
        while shown + MINUTE < wall:
            shown += MINUTE
            skipped.append(shown)
        if wildcard:
            fire = croniter.match(schedule, wall)
        else:
            fire = (croniter.match(schedule, wall) and wall not in seen) or any(
                croniter.match(schedule, s) for s in skipped
            )
        seen.add(wall)
        shown = wall
        if fire and start < moment < end:
            fires.append(moment)
    return fires


def between(cron: Job, start: datetime, end: datetime) -> list[datetime]:
    """Return the job's fire times in (start, end)."""
    fires: list[datetime] = []
    while (fire := next_fire(cron, fires[-1] if fires else start)) is not None and fire < end:
        fires.append(fire)
    return fires


@pytest.mark.parametrize("zone_name", ZONES)
def test_every_change_of_a_year_agrees_with_a_minute_by_minute_reference(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    moments = changes(zone, 2026) or [at(2026, 3, 29, 1)]  # UTC: a night like any other
    assert zone_name == "UTC" or len(moments) == 2
    for change in moments:
        start, end = change - timedelta(hours=5), change + timedelta(hours=5)
        for schedule in SCHEDULES:
            expected = reference(schedule, zone, start, end)
            fires = between(make_job(schedule, zone_name), start, end)
            assert fires == expected, (zone_name, schedule, change)


# -- the scheduler, on a fake clock, on both databases ------------------------------------


@pytest.mark.parametrize(
    ("night", "expected"),
    [
        (at(2026, 3, 28, 22), [at(2026, 3, 29, 1, 0)]),  # 03:00 CEST, right after the gap
        (at(2026, 10, 24, 22), [at(2026, 10, 25, 0, 30)]),  # the first 02:30 only
    ],
    ids=["spring", "autumn"],
)
def test_the_scheduler_fires_a_nightly_job_once_across_a_change(
    services: Services, sources: Path, night: datetime, expected: list[datetime]
) -> None:
    install(services, sources, unique(), [job("nightly", schedule="30 2 * * *", timezone=PARIS)])

    async def body(rig: Rig) -> Any:
        for minute in range(0, 6 * 60, 1):  # 22:00 to 04:00 UTC, a tick a minute
            await rig.tick(night + minute * MINUTE)
        return [r.scheduled_at for r in rig.runs()]

    assert with_rig(services, body, start=night, concurrency=0) == expected
