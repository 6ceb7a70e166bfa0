"""The module store on SQLite and PostgreSQL: values, versions, ttl, quotas, paging, and
writes that race."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from modhub.db import Database, upgrade
from modhub.db.models import StoredValue, utcnow
from modhub.store import (
    MAX_VALUE_BYTES,
    InvalidKey,
    InvalidValue,
    ModuleStore,
    QuotaExceeded,
    Usage,
    ValueTooLarge,
    VersionConflict,
)
from modhub.store.sqlite import LoopReader
from tests.store.conftest import QUOTA, Clock


def test_set_get_versions_and_modules_apart(store: ModuleStore) -> None:
    assert store.set("a", "k", {"x": [1, "é"]}, quota_bytes=QUOTA) == 1
    assert store.set("a", "k", 2, quota_bytes=QUOTA) == 2
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert (entry.value, entry.version, entry.expires_at) == (2, 2, None)
    assert store.get_entry("b", "k") is None
    assert store.list("b").items == []


def test_if_version(store: ModuleStore) -> None:
    assert store.set("a", "k", 1, if_version=0, quota_bytes=QUOTA) == 1
    with pytest.raises(VersionConflict, match="at version 1"):
        store.set("a", "k", 2, if_version=0, quota_bytes=QUOTA)
    with pytest.raises(VersionConflict):
        store.delete("a", "k", if_version=5)
    assert store.set("a", "k", 3, if_version=1, quota_bytes=QUOTA) == 2
    assert store.delete("a", "k", if_version=2) is True
    assert store.delete("a", "k") is False


def test_a_key_expires_at_once_for_readers(store: ModuleStore, clock: Clock) -> None:
    store.set("a", "session", "s", ttl=30, quota_bytes=QUOTA)
    entry = store.get_entry("a", "session")
    assert entry is not None
    assert entry.expires_at == clock.now + timedelta(seconds=30)
    clock.now += timedelta(seconds=31)
    assert store.get_entry("a", "session") is None
    assert store.list("a").items == []
    assert store.set("a", "session", "t", if_version=0, quota_bytes=QUOTA) == 1  # absent again
    store.set("a", "old", 1, ttl=1, quota_bytes=QUOTA)
    clock.now += timedelta(seconds=2)
    assert store.purge_expired() == 1
    assert store.usage("a").keys == 1


def test_incr(store: ModuleStore) -> None:
    assert store.incr("a", "n", quota_bytes=QUOTA) == 1
    assert store.incr("a", "n", 41, quota_bytes=QUOTA) == 42
    store.set("a", "text", "x", quota_bytes=QUOTA)
    with pytest.raises(InvalidValue, match="whole number"):
        store.incr("a", "text", quota_bytes=QUOTA)


@pytest.mark.parametrize(
    ("key", "error"), [("", InvalidKey), ("k" * 513, InvalidKey), (7, InvalidKey)]
)
def test_bad_keys(store: ModuleStore, key: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.set("a", key, 1, quota_bytes=QUOTA)  # type: ignore[arg-type]


def test_bad_values_change_nothing(store: ModuleStore) -> None:
    store.set("a", "k", "kept", quota_bytes=QUOTA)
    with pytest.raises(InvalidValue):
        store.set("a", "k", float("nan"), quota_bytes=QUOTA)
    with pytest.raises(InvalidValue):
        store.set("a", "k", {1, 2}, quota_bytes=QUOTA)
    with pytest.raises(ValueTooLarge):
        store.set("a", "k", "x" * MAX_VALUE_BYTES, quota_bytes=QUOTA)
    with pytest.raises(InvalidValue):
        store.set("a", "k", 1, ttl=-1, quota_bytes=QUOTA)
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert (entry.value, entry.version) == ("kept", 1)


def test_quota_counts_keys_and_values(store: ModuleStore) -> None:
    store.set("a", "k1", "x" * 90, quota_bytes=100)  # 2 + 92 bytes
    usage = store.usage("a")
    assert usage == Usage(1, 94)
    with pytest.raises(QuotaExceeded) as over:
        store.set("a", "k2", "y" * 8, quota_bytes=100)  # 2 + 10 more: 106
    assert "100 bytes" in over.value.detail
    assert "94 bytes" in over.value.detail
    assert store.usage("a") == usage
    store.set("a", "k1", "small", quota_bytes=100)  # replacing shrinks it
    assert store.usage("a") == Usage(1, 9)
    store.set("a", "k1", "x" * 90, quota_bytes=100)
    store.set("a", "k1", "x" * 80, quota_bytes=50)  # over a lowered limit: shrinking is fine
    with pytest.raises(QuotaExceeded):
        store.set("a", "k1", "x" * 81, quota_bytes=50)


def test_list_pages_in_byte_order_on_both_databases(store: ModuleStore) -> None:
    keys = ["b", "B", "a", "é", "a/1", "a/10", "a/2", "a_x", "a%", "Z"]
    for key in keys:
        store.set("a", key, key, quota_bytes=QUOTA)
    seen, cursor = [], None
    while True:
        page = store.list("a", limit=3, cursor=cursor)
        seen += [entry.key for entry in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(keys, key=lambda k: k.encode())
    assert [e.key for e in store.list("a", "a/").items] == ["a/1", "a/10", "a/2"]
    assert [e.key for e in store.list("a", "a_").items] == ["a_x"]
    assert [e.key for e in store.list("a", "a%").items] == ["a%"]
    with pytest.raises(InvalidValue):
        store.list("a", limit=0)
    with pytest.raises(InvalidValue):
        store.list("a", cursor="%%%not-base64")


def test_drop(store: ModuleStore) -> None:
    store.set("a", "k", 1, quota_bytes=QUOTA)
    store.set("a", "j", 2, quota_bytes=QUOTA)
    store.set("b", "k", 1, quota_bytes=QUOTA)
    assert store.drop("a") == Usage(2, 4)
    assert store.list("a").items == []
    assert store.usage("b") == Usage(1, 2)


def test_every_path_agrees_on_the_expiry_to_the_microsecond(
    store: ModuleStore, clock: Clock
) -> None:
    """On SQLite one-key statements bypass SQLAlchemy (store/sqlite.py); lists, usage and
    purges do not. Both must store and compare times alike."""
    clock.now = clock.now.replace(microsecond=123456)
    store.set("a", "k", 1, ttl=0.5, quota_bytes=QUOTA)
    expires = clock.now + timedelta(seconds=0.5)
    with store.db.read() as session:
        assert session.get_one(StoredValue, ("a", "k")).expires_at == expires
    clock.now = expires - timedelta(microseconds=1)
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert entry.value == 1
    assert [entry.key for entry in store.list("a").items] == ["k"]
    assert store.usage("a").keys == 1
    clock.now = expires
    assert store.get_entry("a", "k") is None
    assert store.list("a").items == []
    assert store.usage("a").keys == 0
    assert store.purge_expired() == 1


def test_an_awaited_read_answers_as_get_entry(store: ModuleStore, clock: Clock) -> None:
    """On SQLite `aget_entry` reads on the loop (store/sqlite.py LoopReader), large values
    in a thread; every answer is get_entry's."""
    big = "x" * (70 * 1024)  # decoded in a thread, not on the loop
    store.set("a", "small", {"v": 1}, quota_bytes=QUOTA)
    store.set("a", "big", big, quota_bytes=QUOTA)
    store.set("a", "brief", 1, ttl=1, quota_bytes=QUOTA)
    clock.now += timedelta(seconds=2)
    for key in ("small", "big", "brief", "absent"):
        assert asyncio.run(store.aget_entry("a", key)) == store.get_entry("a", key)
    assert asyncio.run(store.aget_entry("b", "small")) is None  # another module's key
    store.set("a", "small", 2, quota_bytes=QUOTA)  # a later write is seen at once
    entry = asyncio.run(store.aget_entry("a", "small"))
    assert entry is not None
    assert (entry.value, entry.version) == (2, 2)


def test_the_loop_reader_never_waits_for_a_locked_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'locked.db'}")
    upgrade(db.engine)
    writer = ModuleStore(db)
    writer.set("a", "k", 1, quota_bytes=QUOTA)
    writer.close()
    reader = LoopReader(str(tmp_path / "locked.db"))
    assert reader.get("a", "k", utcnow())[0]
    reader.close()
    db.dispose()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # in WAL mode: no other reader
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE module_store SET version = 5")
    assert reader.get("a", "k", utcnow()) == (False, None)  # at once: to a thread instead
    holder.execute("ROLLBACK")
    holder.close()
    reader.close()


def test_awaited_writes_answer_as_the_blocking_ones(
    db: Database, store: ModuleStore, clock: Clock
) -> None:
    """On SQLite an awaited write runs on the loop (store/writer.py LoopWrites), but for a
    large value or a quota purge, which go to the writer's thread; on PostgreSQL both forms
    run in a thread. The same steps give the same answers, errors and data either way."""
    big, huge = "b" * 70_000, "h" * 70_000  # over what the loop writes or decodes
    steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("set", ("k1", "x" * 90), {"quota_bytes": 250}),
        ("set", ("k1", "y"), {"if_version": 0, "quota_bytes": 250}),
        ("set", ("tmp", "t" * 60), {"ttl": 1, "quota_bytes": 250}),
        ("incr", ("n",), {"quota_bytes": 250}),
        ("incr", ("n", 41), {"quota_bytes": 250}),
        ("incr", ("k1",), {"quota_bytes": 250}),
        ("delete", ("absent",), {}),
        ("delete", ("k1",), {"if_version": 5}),
        ("set", ("big", big), {"quota_bytes": QUOTA}),  # to the thread: large
        ("incr", ("big",), {"quota_bytes": QUOTA}),  # to the thread: not decoded on the loop
        ("delete", ("big",), {}),
        ("tick", (), {}),  # tmp expires
        ("set", ("k2", "z" * 90), {"quota_bytes": 250}),  # to the thread: purges tmp first
        ("set", ("k3", "w" * 90), {"quota_bytes": 250}),
        ("incr", ("tmp",), {"quota_bytes": 250}),
        ("set", ("huge", huge), {"quota_bytes": QUOTA}),
        ("delete", ("k2",), {"if_version": 1}),
    ]
    thread_commits: list[int] = []
    event.listen(db.engine, "commit", lambda connection: thread_commits.append(1))

    def outcome(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:
            return type(exc).__name__, str(exc)

    def blocking(module: str) -> list[Any]:
        answers = []
        for name, args, kwargs in steps:
            if name == "tick":
                clock.now += timedelta(seconds=2)
                continue
            method = getattr(store, name)
            answers.append(outcome(lambda: method(module, *args, **kwargs)))  # noqa: B023
        return answers

    async def awaited(module: str) -> list[Any]:
        answers = []
        for name, args, kwargs in steps:
            if name == "tick":
                clock.now += timedelta(seconds=2)
                continue
            try:
                answers.append(await getattr(store, f"a{name}")(module, *args, **kwargs))
            except Exception as exc:
                answers.append((type(exc).__name__, str(exc)))
        return answers

    start = clock.now
    expected = blocking("thread")
    in_thread = len(thread_commits)
    clock.now = start
    assert asyncio.run(awaited("loop")) == expected
    assert [answer[0] if isinstance(answer, tuple) else answer for answer in expected] == [
        1, "VersionConflict", 1, 1, 42, "InvalidValue", False, "VersionConflict", 1,
        "InvalidValue", True, 1, "QuotaExceeded", 1, 1, True,
    ]  # fmt: skip
    assert store.list("loop") == store.list("thread")
    assert store.usage("loop") == store.usage("thread")
    for key in ("n", "k3", "tmp", "huge"):
        assert store.get_entry("loop", key) == store.get_entry("thread", key)
    if db.dialect == "sqlite":  # on the loop but the three the thread must do
        assert len(thread_commits) - in_thread == 3  # big, the purge, huge
    else:
        assert len(thread_commits) - in_thread == in_thread
