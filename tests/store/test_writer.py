"""The store's group writer (SQLite): writes share transactions, and fail alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, text

from modhub.db import Database
from modhub.store import writer
from modhub.store.writer import GroupWrites


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The engine as the store uses it: modhub's SQLite set-up, writes BEGIN IMMEDIATE."""
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    yield db.engine.execution_options(immediate=True)
    db.dispose()


def rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT k, v FROM t")).all())  # type: ignore[arg-type]


def insert(key: str, value: int, fail: bool = False) -> writer.Write[str]:
    def write(connection: Connection) -> str:
        connection.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": key, "v": value})
        if fail:
            raise ValueError(f"{key} failed after its insert")
        return key

    return write


def test_waiting_writes_share_one_transaction_and_a_failing_one_rolls_back_alone(
    engine: Engine,
) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    writes = GroupWrites(engine)
    gate = threading.Event()

    def held(connection: Connection) -> str:
        gate.wait(10)  # the writer's thread waits here while the others queue up
        return insert("first", 0)(connection)

    first = writes.submit(held)
    queued = [writes.submit(insert(f"k{i}", i, fail=i == 3)) for i in range(6)]
    gate.set()
    assert first.result(10) == "first"
    for i, future in enumerate(queued):
        if i == 3:
            with pytest.raises(ValueError, match="k3 failed"):
                future.result(10)
        else:
            assert future.result(10) == f"k{i}"
    assert rows(engine) == {"first": 0, **{f"k{i}": i for i in range(6) if i != 3}}
    assert len(commits) == 2  # the held write alone, then the six queued behind it in one


def test_a_lone_failing_write_leaves_nothing(engine: Engine) -> None:
    writes = GroupWrites(engine)
    with pytest.raises(ValueError, match="gone failed"):
        writes.run(insert("gone", 1, fail=True))
    assert writes.run(insert("kept", 2)) == "kept"
    assert rows(engine) == {"kept": 2}


def test_a_failed_commit_fails_every_write_of_its_group_and_keeps_none(
    engine: Engine,
) -> None:
    writes = GroupWrites(engine)
    gate = threading.Event()
    broken = threading.Event()

    def held(connection: Connection) -> None:
        gate.wait(10)
        broken.set()  # the next commit (the group's) fails, as on a full disk

    def commit(connection: Connection) -> None:
        if broken.is_set():
            raise OSError("disk full")

    event.listen(engine, "commit", commit)
    first = writes.submit(held)
    group = [writes.submit(insert(key, 1)) for key in ("a", "b", "c")]
    gate.set()
    with pytest.raises(OSError, match="disk full"):
        first.result(10)
    for future in group:
        with pytest.raises(OSError, match="disk full"):
            future.result(10)
    broken.clear()
    assert rows(engine) == {}


def test_awaited_writes_answer_on_the_loop_and_the_thread_ends_when_idle(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "IDLE_SECONDS", 0.05)
    writes = GroupWrites(engine)

    async def fifty() -> list[str]:
        return await asyncio.gather(*(writes.arun(insert(f"a{i}", i)) for i in range(50)))

    results = asyncio.run(fifty())
    assert results == [f"a{i}" for i in range(50)]
    thread = writes._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert writes._thread is None
    assert asyncio.run(writes.arun(insert("again", 1))) == "again"  # a new thread takes over
    assert len(rows(engine)) == 51


def test_close_finishes_the_queued_writes_then_ends_the_thread(engine: Engine) -> None:
    writes = GroupWrites(engine)
    gate = threading.Event()

    def held(connection: Connection) -> str:
        gate.wait(10)
        return insert("first", 0)(connection)

    first = writes.submit(held)
    queued = [writes.submit(insert(f"q{i}", i)) for i in range(3)]
    thread = writes._thread
    closing = threading.Thread(target=writes.close)
    closing.start()
    gate.set()
    closing.join(10)
    assert first.result(0) == "first"
    assert [future.result(0) for future in queued] == ["q0", "q1", "q2"]
    assert thread is not None
    assert not thread.is_alive()
    assert writes._connection is None
    assert writes.run(insert("after", 1)) == "after"  # usable again: a new thread
    writes.close()
