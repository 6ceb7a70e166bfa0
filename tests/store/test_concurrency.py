"""Writes that race, on SQLite and PostgreSQL: from threads, from two engines (as two
servers would have) and from another process, no increment is lost, exactly one
"only if absent" set wins, compare-and-set loops add up and the usage stays exact."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from modhub.db import Database
from modhub.store import InvalidValue, ModuleStore, QuotaExceeded, Usage, VersionConflict
from tests.store.conftest import QUOTA

THREADS = 8

# Another server process: connects, says so, waits for "go", then increments from threads.
PROCESS = """
import sys, threading
from modhub.db import Database
from modhub.store import ModuleStore
db = Database(sys.argv[1])
store = ModuleStore(db)
store.usage("a")  # connected
print("ready", flush=True)
sys.stdin.readline()
def work():
    for _ in range(int(sys.argv[2])):
        store.incr("a", "n", quota_bytes=2**30)
threads = [threading.Thread(target=work) for _ in range(int(sys.argv[3]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
db.dispose()
"""


@pytest.fixture
def second(database_url: str, db: Database) -> Iterator[ModuleStore]:
    """A store on its own engine and pool, as a second server process has."""
    other = Database(database_url)
    yield ModuleStore(other)
    other.dispose()


def race(work: Callable[[int], object], threads: int = THREADS) -> list[object]:
    """Run `work(i)` in `threads` threads released at once; return the results in order."""
    barrier = threading.Barrier(threads)

    def run(i: int) -> object:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, range(threads)))


def test_increments_from_threads_and_processes_lose_nothing(
    database_url: str, store: ModuleStore, second: ModuleStore
) -> None:
    per_thread, process_threads = 25, 4
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, database_url, str(per_thread), str(process_threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()

    def work(i: int) -> None:
        for _ in range(per_thread):
            (store, second)[i % 2].incr("a", "n", quota_bytes=QUOTA)

    race(work)
    for process in processes:
        assert process.wait(timeout=120) == 0
    total = per_thread * (THREADS + 2 * process_threads)
    entry = store.get_entry("a", "n")
    assert entry is not None
    assert (entry.value, entry.version) == (total, total)


def test_one_of_many_if_absent_sets_wins(store: ModuleStore, second: ModuleStore) -> None:
    def claim(i: int) -> str:
        try:
            (store, second)[i % 2].set("a", "leader", i, if_version=0, quota_bytes=QUOTA)
        except VersionConflict:
            return "lost"
        return "won"

    assert sorted(race(claim)) == ["lost"] * (THREADS - 1) + ["won"]  # type: ignore[type-var]
    assert store.usage("a") == Usage(1, len("leader") + 1)


def test_compare_and_set_loops_add_up(store: ModuleStore, second: ModuleStore) -> None:
    rounds = 10

    def add(i: int) -> int:
        mine, conflicts = (store, second)[i % 2], 0
        for _ in range(rounds):
            while True:
                entry = mine.get_entry("a", "n")
                value, version = (entry.value, entry.version) if entry else (0, 0)
                try:
                    mine.set("a", "n", value + 1, if_version=version, quota_bytes=QUOTA)
                    break
                except VersionConflict:
                    conflicts += 1
        return conflicts

    race(add)
    entry = store.get_entry("a", "n")
    assert entry is not None
    assert (entry.value, entry.version) == (THREADS * rounds, THREADS * rounds)


def test_usage_stays_exact_under_mixed_writes(store: ModuleStore, second: ModuleStore) -> None:
    quota = 4000

    def churn(i: int) -> None:
        mine, rng = (store, second)[i % 2], random.Random(i)
        for _ in range(40):
            key, roll = f"k{rng.randrange(6)}", rng.random()
            try:
                if roll < 0.45:
                    mine.set("a", key, "x" * rng.randrange(400), quota_bytes=quota)
                elif roll < 0.7:
                    mine.incr("a", f"n{rng.randrange(2)}", quota_bytes=quota)
                elif roll < 0.95:
                    mine.delete("a", key)
                else:
                    mine.drop("a")
            except QuotaExceeded:
                pass

    race(churn)
    entries = store.list("a", limit=1000).items
    counted = sum(len(e.key.encode()) + len(json.dumps(e.value).encode()) for e in entries)
    assert store.usage("a") == Usage(len(entries), counted)
    assert counted <= quota
    with pytest.raises(InvalidValue):  # and it still refuses what it should
        store.incr("a", "n0", 1.5, quota_bytes=quota)  # type: ignore[arg-type]
