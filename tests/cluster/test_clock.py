"""The test-only job clock (`cluster/clock.py`): refused without MODHUB_TESTING, trusted
only in a file of this user's that nobody else can write, the real time otherwise."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from modhub.cluster.clock import FileClock
from modhub.settings import Settings

SET = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    folder = tmp_path / "clock"
    folder.mkdir(mode=0o700)
    path = folder / "now"
    path.write_text(SET.isoformat())
    path.chmod(0o600)
    return path


def real(moment: datetime) -> bool:
    return abs(moment - datetime.now(UTC)) < timedelta(minutes=5)


def test_the_setting_is_refused_without_the_test_flag(
    clock_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_TEST_CLOCK", str(clock_file))
    with pytest.raises(ValidationError, match="test_clock: MODHUB_TEST_CLOCK is a test-only"):
        Settings()
    monkeypatch.setenv("MODHUB_TESTING", "true")
    assert Settings().test_clock == clock_file


def test_the_file_sets_the_time_and_its_absence_gives_the_real_one(clock_file: Path) -> None:
    clock = FileClock(clock_file)
    assert clock() == SET
    clock_file.write_text("2030-01-01T02:01:00+02:00")
    assert clock() == SET  # read in UTC
    clock_file.unlink()
    assert real(clock())


@pytest.mark.parametrize("content", ["tomorrow", "2030-01-01T00:01:00", "", "\x00" * 50, "9" * 200])
def test_a_file_without_a_zoned_time_gives_the_real_time(clock_file: Path, content: str) -> None:
    clock_file.write_text(content)
    assert real(FileClock(clock_file)())


def test_a_file_others_can_write_is_not_trusted(clock_file: Path) -> None:
    clock = FileClock(clock_file)
    clock_file.chmod(0o622)
    assert real(clock())
    clock_file.chmod(0o600)
    clock_file.parent.chmod(0o777)
    assert real(clock())
    clock_file.parent.chmod(0o700)
    assert clock() == SET


def test_a_link_is_not_followed(clock_file: Path, tmp_path: Path) -> None:
    link = clock_file.parent / "link"
    os.symlink(clock_file, link)
    assert real(FileClock(link)())


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_a_file_of_another_user_is_not_trusted(clock_file: Path) -> None:
    os.chown(clock_file, 65534, 65534)
    assert real(FileClock(clock_file)())
