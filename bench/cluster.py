"""Measure a cluster of modhub nodes on one PostgreSQL database (issue 13).

Run with `.venv/bin/python bench/cluster.py [--changes N] [--poll-changes N]`.

Change propagation: two real `modhub serve` nodes, A and B, each with its own data dir,
on one PostgreSQL database made for the run (on the server of MODHUB_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/postgres, dropped after; skipped with the reason
when none answers). A bare manifest, `bench-bare` (one route, no code: it answers
501 while the module is ENABLED and 404 otherwise), is registered and enabled through A.
Then, `--changes` times, the module is disabled or enabled again through A and B's route
is polled back to back until it answers the new way. A change's time runs from just
before the request to A (whose commit is inside it) to B's first answer of the new kind,
so it includes A's request; it is also given from A's answer (the commit lies between the
two). After each change the script waits a random 0-200 ms (0-1 s with the poll only, so
the changes do not fall in step with B's poll). Measured twice: with B's listener (LISTEN/
NOTIFY, the default) and with `MODHUB_LISTEN_CHANGES=false` (the 1 s fingerprint poll
alone, `--poll-changes` times).

Target (issue 13): p99 under 200 ms from the commit on one node to the change being
served on every other node.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from common import (
    library_versions,
    load_average,
    login,
    machine_summary,
    percentile,
    start_server,
    stop_server,
    utc_now,
    verdict,
)
from modhub.db import Database, upgrade

PG_ADMIN_URL = os.environ.get("MODHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_P99 = 0.200  # seconds
API = "/api/v1"
BARE = {
    "name": "bench-bare",
    "version": "1.0.0",
    "displayName": "Bench bare",
    "description": "A bare manifest whose route tells ENABLED (501) from not (404).",
    "author": "bench",
    "license": "MIT",
    "capabilities": {"api": {"routes": [{"method": "GET", "path": "/ping", "handler": "h.py"}]}},
}
SERVED = {"ENABLED": 501, "DISABLED": 404}


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """Yield the URL of a fresh, migrated PostgreSQL database (None: none answers)."""
    import psycopg

    admin = PG_ADMIN_URL.rsplit("/", 1)[0]
    name = f"modhub_bench_cluster_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(f"{admin}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
        yield None
        return
    url = f"{admin}/{name}"
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def client(url: str) -> httpx.Client:
    """Return an admin client of the node at `url`."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {login(url)}"}, timeout=30)


def propagation(
    a: httpx.Client, b: httpx.Client, changes: int, gap: float
) -> tuple[list[float], list[float]]:
    """Flip `bench-bare` through A `changes` times, a random 0-`gap` s apart; return the
    seconds until B serves each change, from before A's request and from A's answer."""
    took: list[float] = []
    after: list[float] = []
    status = "ENABLED"
    for _ in range(changes):
        status = "DISABLED" if status == "ENABLED" else "ENABLED"
        start = time.perf_counter()
        answer = a.put(f"{API}/modules/bench-bare/status", json={"status": status})
        answered = time.perf_counter()
        answer.raise_for_status()
        deadline = start + 30
        while b.get(f"{API}/m/bench-bare/ping").status_code != SERVED[status]:
            if time.perf_counter() > deadline:
                raise SystemExit(f"node B did not serve bench-bare {status} in 30 s")
        served = time.perf_counter()
        took.append(served - start)
        after.append(served - answered)
        time.sleep(random.uniform(0, gap))
    return took, after


def measure(
    url: str, folder: Path, label: str, env: dict[str, str], changes: int, gap: float
) -> bool:
    """Start nodes A and B (B with `env`) on `url`, measure, print; return PASS."""
    base = {"MODHUB_DATABASE_URL": url, "MODHUB_SCHEDULER": "false"}
    for node in ("a", "b"):
        (folder / node).mkdir(parents=True)
    node_a, url_a = start_server(folder / "a" / "data", base)
    try:
        node_b, url_b = start_server(folder / "b" / "data", {**base, **env})
        try:
            with client(url_a) as a, client(url_b) as b:
                if a.get(f"{API}/modules/bench-bare").status_code == 404:
                    a.post(f"{API}/modules", json={"manifest": BARE}).raise_for_status()
                a.put(
                    f"{API}/modules/bench-bare/status", json={"status": "ENABLED"}
                ).raise_for_status()
                propagation(a, b, 4, gap)  # warm up: connections, the first reloads
                took, after = propagation(a, b, changes, gap)
        finally:
            stop_server(node_b)
    finally:
        stop_server(node_a)
    p50, p99 = percentile(took, 50) * 1000, percentile(took, 99) * 1000
    ok = p99 < TARGET_P99 * 1000
    print(
        f"  {label}, {changes} changes: from A's request p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(took) * 1000:.1f} ms; from A's answer p50 {percentile(after, 50) * 1000:.1f}"
        f" ms, p99 {percentile(after, 99) * 1000:.1f} ms; p99 < {TARGET_P99 * 1000:.0f} ms: "
        f"{verdict(ok)}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="changes with the listener")
    parser.add_argument("--poll-changes", type=int, default=40, help="changes, poll only")
    args = parser.parse_args()
    print(f"date: {utc_now()}")
    print(f"machine: {machine_summary()}")
    print(f"software: {library_versions('sqlalchemy', 'psycopg', 'uvicorn')}")
    print(f"load average before: {load_average()}")
    verdicts: list[tuple[str, bool]] = []
    with postgres_database() as url:
        if url is None:
            print("change propagation: skipped")
            return
        print(
            "\nCHANGE PROPAGATION: two `modhub serve` nodes on one PostgreSQL database; "
            "a status change through A until B serves it"
        )
        with tempfile.TemporaryDirectory(prefix="modhub-bench-cluster-") as tmp:
            folder = Path(tmp)
            ok = measure(url, folder / "notify", "LISTEN/NOTIFY", {}, args.changes, 0.2)
            verdicts.append(("change propagation p99 (LISTEN/NOTIFY)", ok))
            off = {"MODHUB_LISTEN_CHANGES": "false"}
            ok = measure(url, folder / "poll", "poll only (1 s)", off, args.poll_changes, 1.0)
            verdicts.append(("change propagation p99 (poll only, for comparison)", ok))
    print(f"\nload average after: {load_average()}")
    print("summary:")
    for name, ok in verdicts:
        print(f"  {verdict(ok)}  {name}")
    sys.exit(0)


if __name__ == "__main__":
    main()
