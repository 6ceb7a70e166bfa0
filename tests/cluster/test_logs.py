"""Module logs in the database (`cluster/logs.py`), on SQLite and PostgreSQL: lines held
and written in batches, bounded per module in the buffer and in the database, read from
every node in time order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from modhub.cluster.logs import LogShipper
from modhub.db import Database, upgrade
from modhub.db.models import Module, ModuleLogLine


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade(database.engine)
    yield database
    database.dispose()


def ticking() -> Callable[[], datetime]:
    """Return a clock that moves one millisecond a reading."""
    now = [datetime(2026, 12, 5, 12, 0, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(milliseconds=1)
        return now[0]

    return clock


def shipper(db: Database, node: str = "a", **limits: Any) -> LogShipper:
    limits = {"max_lines": 10_000, "max_bytes": 1 << 30, "clock": ticking(), **limits}
    return LogShipper(db, node, **limits)


def stored(db: Database, module: str = "m") -> list[str]:
    with db.read() as session:
        rows = session.scalars(
            select(ModuleLogLine.line)
            .where(ModuleLogLine.module == module)
            .order_by(ModuleLogLine.at, ModuleLogLine.id)
        )
        return list(rows)


def test_lines_wait_for_a_flush_and_go_in_one_batch(db: Database) -> None:
    logs = shipper(db)
    for i in range(100):
        logs.add("m", f"line {i}", "stderr", f"req-{i}")
    assert stored(db) == []  # nothing written per line
    assert [e.line for e in logs.tail("m", 1000, 1 << 20)] == [f"line {i}" for i in range(100)]

    assert logs.flush() == 100
    assert stored(db) == [f"line {i}" for i in range(100)]
    assert logs.flush() == 0
    entries = logs.tail("m", 1000, 1 << 20)
    assert [e.line for e in entries] == [f"line {i}" for i in range(100)]  # no duplicates
    assert {(e.node, e.stream) for e in entries} == {("a", "stderr")}
    assert entries[7].request_id == "req-7"


def test_every_nodes_lines_in_time_order(db: Database) -> None:
    clock = ticking()
    a, b = shipper(db, "a", clock=clock), shipper(db, "b", clock=clock)
    a.add("m", "a1", "stderr", None)
    b.add("m", "b1", "stderr", None)
    a.add("m", "a2", "stderr", None)
    b.add("m", "b2", "stderr", None)
    b.flush()
    a.add("m", "a3", "modhub", None)  # not written yet: only a answers it
    assert [(e.line, e.node) for e in a.tail("m", 10, 1 << 20)] == [
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("b2", "b"),
        ("a3", "a"),
    ]
    assert [e.line for e in b.tail("m", 10, 1 << 20)] == ["b1", "b2"]
    a.flush()
    assert [e.line for e in b.tail("m", 10, 1 << 20)] == ["a1", "b1", "a2", "b2", "a3"]
    assert [e.line for e in b.tail("m", 2, 1 << 20)] == ["b2", "a3"]  # the last `limit`
    assert [e.line for e in b.tail("m", 10, 7)] == ["b2", "a3"]  # and at most the bytes
    assert b.tail("other", 10, 1 << 20) == []


def test_the_database_keeps_at_most_the_lines_and_bytes_set_per_module(db: Database) -> None:
    logs = shipper(db, max_lines=100)
    for i in range(130):
        logs.add("m", f"line {i:03d}", "stderr", None)
        logs.add("n", f"other {i:03d}", "stderr", None)
        if i % 40 == 39:
            logs.flush()
    logs.flush()  # 10 more: under a quarter of the cap, not trimmed yet
    assert stored(db) == [f"line {i:03d}" for i in range(20, 130)]
    assert logs.trim(["m", "n"]) == 20  # at the next trim (TRIM_SECONDS at the latest)
    assert stored(db) == [f"line {i:03d}" for i in range(30, 130)]
    assert len(stored(db, "n")) == 100

    by_bytes = shipper(db, "b", max_bytes=64 * 1024)
    for i in range(200):
        by_bytes.add("big", f"{i:03d} " + "x" * 1019, "stderr", None)  # 1 KiB with newline
    by_bytes.flush()
    assert stored(db, "big") == [f"{i:03d} " + "x" * 1019 for i in range(136, 200)]


def test_a_flood_between_flushes_keeps_the_newest_lines_and_says_how_many_went(
    db: Database,
) -> None:
    logs = shipper(db, buffer_lines=10)
    for i in range(25):
        logs.add("m", f"line {i}", "stderr", None)
    assert logs.flush() == 11
    lines = [e.line for e in logs.tail("m", 100, 1 << 20)]
    assert lines[0].startswith("modhub: 15 lines of output were dropped on this node")
    assert lines[1:] == [f"line {i}" for i in range(15, 25)]

    huge = shipper(db, "b", buffer_bytes=64 * 1024)
    for i in range(100):
        huge.add("h", f"{i:03d} " + "y" * 16_000, "stderr", None)
    huge.flush()
    kept = stored(db, "h")
    assert sum(len(line) + 1 for line in kept) <= 64 * 1024 + 200
    assert kept[-1].startswith("099 ")


def test_lines_survive_a_failed_write(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = shipper(db)
    logs.add("m", "before", "stderr", None)

    def broken() -> Any:
        raise ConnectionError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(db, "write", broken)
        with pytest.raises(ConnectionError):
            logs.flush()
    logs.add("m", "after", "stderr", None)
    assert [e.line for e in logs.tail("m", 10, 1 << 20)] == ["before", "after"]
    assert logs.flush() == 2
    assert stored(db) == ["before", "after"]


def test_lines_of_modules_no_longer_registered_are_swept(db: Database) -> None:
    with db.write() as session:
        session.add(Module(name="kept", version="1.0.0", display_name="Kept", status="DISABLED"))
    logs = shipper(db)
    logs.add("kept", "stays", "stderr", None)
    logs.add("gone", "goes", "stderr", None)
    logs.flush()
    assert logs.sweep() == 1
    with db.read() as session:
        modules = session.scalars(select(ModuleLogLine.module)).all()
        assert modules == ["kept"]
        assert session.scalar(select(func.count()).select_from(ModuleLogLine)) == 1
