"""When a job fires: 5-field cron and macros, time zones, coalesced and skipped misfires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modhub.jobs.schedule import SKIP_GRACE, due, next_fire, next_fires, skipped_to
from modhub.manifest.model import Job


def make_job(schedule: str | None, **fields: Any) -> Job:
    return Job.model_validate({"name": "j", "handler": "jobs/j.py", "schedule": schedule, **fields})


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("* * * * *", at(2025, 1, 15, 10, 0, 30), at(2025, 1, 15, 10, 1)),
        ("* * * * *", at(2025, 1, 15, 10, 1), at(2025, 1, 15, 10, 2)),  # strictly after
        ("*/5 * * * *", at(2025, 1, 15, 10, 3), at(2025, 1, 15, 10, 5)),
        ("0 */6 * * *", at(2025, 1, 15, 10, 0), at(2025, 1, 15, 12, 0)),
        ("30 2 1 * *", at(2025, 1, 15, 10, 0), at(2025, 2, 1, 2, 30)),
        ("0 9 * * 1-5", at(2025, 1, 17, 10, 0), at(2025, 1, 20, 9, 0)),  # Fri → Mon
        ("15,45 8 * * *", at(2025, 1, 15, 8, 20), at(2025, 1, 15, 8, 45)),
        ("0 0 29 2 *", at(2025, 1, 1), at(2028, 2, 29)),
        ("@hourly", at(2025, 1, 15, 10, 30), at(2025, 1, 15, 11, 0)),
        ("@daily", at(2025, 1, 15, 10, 30), at(2025, 1, 16)),
        ("@midnight", at(2025, 1, 15, 10, 30), at(2025, 1, 16)),
        ("@weekly", at(2025, 1, 15, 10, 30), at(2025, 1, 19)),  # Sunday
        ("@monthly", at(2025, 1, 15, 10, 30), at(2025, 2, 1)),
        ("@yearly", at(2025, 1, 15, 10, 30), at(2026, 1, 1)),
        ("@annually", at(2025, 1, 15, 10, 30), at(2026, 1, 1)),
    ],
)
def test_next_fire_in_utc(schedule: str, after: datetime, expected: datetime) -> None:
    fire = next_fire(make_job(schedule), after)
    assert fire == expected
    assert fire is not None
    assert fire.tzinfo is not None
    assert fire.utcoffset() == timedelta(0)


def test_next_fires_lists_consecutive_ticks() -> None:
    fires = next_fires(make_job("*/15 * * * *"), at(2025, 1, 15, 10, 7), 4)
    assert fires == [at(2025, 1, 15, 10, m) for m in (15, 30, 45)] + [at(2025, 1, 15, 11, 0)]


def test_paris_nine_oclock_is_eight_utc_in_winter_and_seven_in_summer() -> None:
    paris = make_job("0 9 * * *", timezone="Europe/Paris")
    assert next_fire(paris, at(2025, 1, 15, 0, 0)) == at(2025, 1, 15, 8, 0)
    assert next_fire(paris, at(2025, 1, 15, 8, 0)) == at(2025, 1, 16, 8, 0)
    assert next_fire(paris, at(2025, 7, 15, 0, 0)) == at(2025, 7, 15, 7, 0)
    # Across the spring change (30 March 2025), the local hour stays 9:00.
    assert next_fires(paris, at(2025, 3, 29, 12, 0), 2) == [
        at(2025, 3, 30, 7, 0),
        at(2025, 3, 31, 7, 0),
    ]


def test_other_time_zones() -> None:
    tokyo = make_job("0 9 * * *", timezone="Asia/Tokyo")  # UTC+9, no summer time
    assert next_fire(tokyo, at(2025, 1, 15, 1, 0)) == at(2025, 1, 16, 0, 0)
    new_york = make_job("@daily", timezone="America/New_York")
    assert next_fire(new_york, at(2025, 1, 15, 12, 0)) == at(2025, 1, 16, 5, 0)
    assert next_fire(make_job("0 9 * * *", timezone="UTC"), at(2025, 1, 15)) == at(2025, 1, 15, 9)


def test_a_job_without_schedule_never_fires() -> None:
    on_demand = make_job(None)
    assert next_fire(on_demand, at(2025, 1, 15)) is None
    assert next_fires(on_demand, at(2025, 1, 15), 3) == []
    assert due(on_demand, at(2025, 1, 15), at(2030, 1, 1)) is None


def test_due_fires_a_tick_once_its_time_has_come() -> None:
    minutely = make_job("* * * * *")
    last = at(2025, 1, 15, 10, 0)
    assert due(minutely, last, at(2025, 1, 15, 10, 0, 59)) is None
    assert due(minutely, last, at(2025, 1, 15, 10, 1)) == at(2025, 1, 15, 10, 1)
    assert due(minutely, last, at(2025, 1, 15, 10, 1, 0, 500)) == at(2025, 1, 15, 10, 1)


def test_missed_ticks_coalesce_into_the_latest() -> None:
    minutely = make_job("* * * * *")
    last = at(2025, 1, 15, 10, 0)
    # Down for 10 ticks (10:01 .. 10:10): one run, for the latest.
    assert due(minutely, last, at(2025, 1, 15, 10, 10, 5)) == at(2025, 1, 15, 10, 10)
    hourly = make_job("0 * * * *")
    assert due(hourly, last, at(2025, 1, 15, 20, 5)) == at(2025, 1, 15, 20, 0)


def test_skip_drops_missed_ticks_older_than_the_grace() -> None:
    hourly = make_job("0 * * * *", misfire="skip")
    last = at(2025, 1, 15, 10, 0)
    now = at(2025, 1, 15, 20, 5)  # ten ticks missed; the latest is 5 minutes old
    assert due(hourly, last, now) is None
    assert skipped_to(hourly, last, now) == at(2025, 1, 15, 20, 0)
    # A tick within the grace still fires (a scheduler a few seconds late is not a misfire).
    assert due(hourly, last, at(2025, 1, 15, 20, 0, 30)) == at(2025, 1, 15, 20, 0)
    assert timedelta(seconds=60) == SKIP_GRACE
    # The next tick after the skipped ones fires normally.
    assert due(hourly, at(2025, 1, 15, 20, 0), at(2025, 1, 15, 21, 0, 1)) == at(2025, 1, 15, 21)
