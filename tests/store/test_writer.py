"""The store's group writer (SQLite): writes share transactions, and fail alone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, text

from modhub.db import Database
from modhub.store import writer
from modhub.store.writer import GroupWrites, LoopWrites


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


# -- writes on the loop (LoopWrites) -----------------------------------------------------------


@pytest.fixture
def on_loop(engine: Engine) -> Iterator[GroupWrites]:
    """The group writer with the loop's own connection, as the store uses it on a file."""
    path = engine.url.database
    assert path is not None
    writes = GroupWrites(engine, LoopWrites(path))
    yield writes
    writes.close()


def committed_alone(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    return commits


def test_a_write_on_the_loop_commits_there_when_the_lock_is_free(
    engine: Engine, on_loop: GroupWrites
) -> None:
    thread_commits = committed_alone(engine)

    async def three() -> list[str]:
        return [await on_loop.arun(insert(f"l{i}", i)) for i in range(3)]

    assert asyncio.run(three()) == ["l0", "l1", "l2"]
    assert on_loop._thread is None  # no hand-off: the writer's thread never started
    assert thread_commits == []
    assert rows(engine) == {"l0": 0, "l1": 1, "l2": 2}


def test_a_failing_write_on_the_loop_rolls_back_alone(engine: Engine, on_loop: GroupWrites) -> None:
    async def run() -> None:
        with pytest.raises(ValueError, match="gone failed"):
            await on_loop.arun(insert("gone", 1, fail=True))
        assert await on_loop.arun(insert("kept", 2)) == "kept"

    asyncio.run(run())
    assert on_loop._thread is None  # the failure was the write's own: not tried again
    assert rows(engine) == {"kept": 2}


def test_a_write_on_the_loop_goes_to_the_thread_when_the_lock_is_held(
    engine: Engine, on_loop: GroupWrites
) -> None:
    """The loop never waits for SQLite's lock: the write queues in the writer's thread,
    which waits for it, and the loop goes on serving meanwhile."""
    path = engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's write, say
    holder.execute("INSERT INTO t VALUES ('held', 0)")

    async def run() -> tuple[str, int]:
        write = asyncio.ensure_future(on_loop.arun(insert("waited", 1)))
        ticks = 0
        while on_loop._thread is None or ticks < 5:  # the loop keeps turning
            await asyncio.sleep(0)
            ticks += 1
        assert not write.done()
        await asyncio.to_thread(holder.execute, "COMMIT")
        return await write, ticks

    answer, ticks = asyncio.run(run())
    holder.close()
    assert answer == "waited"
    assert ticks >= 5
    assert rows(engine) == {"held": 0, "waited": 1}


def test_an_offloaded_write_runs_in_the_thread_with_nothing_kept_from_the_loop(
    engine: Engine, on_loop: GroupWrites
) -> None:
    tried: list[bool] = []

    def large(connection: Connection) -> str:
        tried.append(writer.on_loop(connection))
        connection.execute(text("INSERT INTO t VALUES ('big', 1)"))
        if writer.on_loop(connection):
            raise writer.Offload  # after a statement: it must be rolled back
        return "thread"

    assert asyncio.run(on_loop.arun(large)) == "thread"
    assert tried == [True, False]
    assert rows(engine) == {"big": 1}


def test_the_thread_checkpoints_the_wal_after_writes_on_the_loop(
    engine: Engine, on_loop: GroupWrites, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The loop's connection never copies the WAL back (no checkpoint on its commits); the
    writer's thread does, every CHECKPOINT_EVERY writes: the database file alone then
    holds them."""
    monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 4)
    path = engine.url.database
    assert path is not None
    engine.dispose()  # the pool's connections would checkpoint as they close

    def main_file_rows() -> set[str]:
        copy = tmp_path / "main-only.db"
        copy.write_bytes(Path(path).read_bytes())  # the file without its -wal
        with contextlib.closing(sqlite3.connect(copy)) as connection:
            return {row[0] for row in connection.execute("SELECT k FROM t")}

    async def writes(names: list[str]) -> None:
        for name in names:
            await on_loop.arun(insert(name, 0))

    asyncio.run(writes(["a", "b", "c"]))
    assert main_file_rows() == set()  # in the WAL only
    asyncio.run(writes(["d"]))  # the fourth asks the thread for a checkpoint
    for _ in range(2):  # the second is taken only after the checkpoint queued before both
        on_loop.run(lambda connection: None)
    assert main_file_rows() == {"a", "b", "c", "d"}  # the loop's connection is still open
