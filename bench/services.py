"""Measure module services: the store from a handler, and a module-to-module call.

Run with `.venv/bin/python bench/services.py [--ops N] [--calls N] [--no-postgres]`.

1. Write two modules: `bench-kv` (routes that loop over store calls and time each one with
   `time.perf_counter_ns` inside the handler, so the figure is the channel round trip plus
   the database, without HTTP; an async route that sends `--ops` sets at once; a relay
   route that calls `bench-callee`) and `bench-callee` (`GET /ping`). `bench-kv` lists
   `bench-callee` in `dependencies.modules`.
2. For SQLite, then PostgreSQL (a database made for the run on the server of
   MODHUB_TEST_PG, default postgresql://postgres@127.0.0.1:5432/postgres, dropped after;
   skipped with the reason when none answers), start `modhub serve`, install both modules
   as a client would, warm up, then measure:
   - `get` and `set` from a handler: `--ops` calls each, one after another; p50 and p99;
   - sets per second from one module: one async request that gathers `--ops` `aset`s (the
     channel lets 8 run at a time);
   - a module-to-module call: `GET /m/bench-callee/ping` from this client and
     `GET /m/bench-kv/relay` (which calls it), `--calls` requests each, alternating, one
     client; the added p50 is relay minus direct.
3. In this process, without workers or HTTP: the store service's own cost of a `get` and a
   `set` on each database (`--ops` calls each through `modhub.sandbox.channel.serve`, on an
   event loop, as a worker's call frame reaches it): what the server spends per call, apart
   from the channel's hops, and so what a loaded machine's scheduling adds on top.
Targets (issue 12, SQLite): get/set p50 <= 0.3 ms and p99 <= 2 ms; >= 5,000 sets/s from one
module; a call adds <= 1 ms at p50.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from common import (
    install,
    load_average,
    login,
    machine_summary,
    percentile,
    software,
    start_server,
    stop_server,
    utc_now,
    verdict,
)

PG_ADMIN = os.environ.get("MODHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
KV_CODE = """
import asyncio, time


def _timed(call, count):
    times = []
    for i in range(count):
        start = time.perf_counter_ns()
        call(i)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def gets(request):
    request.store.set("hot", {"v": 1})
    return _timed(lambda i: request.store.get("hot"), int(request.query["n"]))


def sets(request):
    return _timed(lambda i: request.store.set(f"k{i % 100}", {"v": i}), int(request.query["n"]))


async def burst(request):
    count = int(request.query["n"])
    start = time.perf_counter()
    await asyncio.gather(*(request.store.aset(f"b{i % 1000}", i) for i in range(count)))
    return {"sets": count, "seconds": time.perf_counter() - start}


def relay(request):
    return request.modules.call("bench-callee", "GET", "/ping").json
"""


def write_modules(root: Path) -> tuple[Path, Path]:
    """Write `bench-kv` and `bench-callee` into `root`; return their folders."""
    callee = root / "bench-callee"
    (callee / "handlers").mkdir(parents=True)
    (callee / "handlers" / "ping.py").write_text("def handler(request):\n    return {'ok': True}\n")
    (callee / "module.json").write_text(
        json.dumps(
            {
                "name": "bench-callee",
                "version": "1.0.0",
                "displayName": "Bench callee",
                "capabilities": {
                    "api": {
                        "routes": [
                            {"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}
                        ]
                    }
                },
            }
        )
    )
    kv = root / "bench-kv"
    (kv / "handlers").mkdir(parents=True)
    (kv / "handlers" / "kv.py").write_text(textwrap.dedent(KV_CODE))
    routes = [
        {"method": "GET", "path": f"/{name}", "handler": f"handlers/kv.py:{name}"}
        for name in ("gets", "sets", "burst", "relay")
    ]
    (kv / "module.json").write_text(
        json.dumps(
            {
                "name": "bench-kv",
                "version": "1.0.0",
                "displayName": "Bench store",
                "capabilities": {"api": {"routes": routes}},
                "dependencies": {"modules": {"bench-callee": "^1.0.0"}},
                "runtime": {"timeoutMs": 120_000},
            }
        )
    )
    return callee, kv


def postgres_database() -> str | None:
    """Create a database for the run; return its URL, or None (the reason printed)."""
    try:
        import psycopg

        name = f"modhub_bench_services_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL: skipped ({exc})")
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(
    database: str, database_url: str | None, tmp: Path, ops: int, calls: int
) -> dict[str, Any]:
    """Run one server on `database_url` (None: SQLite) and return its figures."""
    data_dir = tmp / database / "data"
    data_dir.mkdir(parents=True)
    env = {"MODHUB_DATABASE_URL": database_url} if database_url else {}
    if database_url:  # a server database is migrated by `modhub db upgrade`
        subprocess.run(
            [sys.executable, "-m", "modhub", "db", "upgrade"],
            env={**os.environ, **env, "MODHUB_DATA_DIR": str(data_dir)},
            check=True,
            capture_output=True,
        )
    process, url = start_server(data_dir, env)
    try:
        token = login(url)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as http:
            for folder in write_modules(tmp / database / "src"):
                install(http, folder, tmp / database)
            kv = "/api/v1/m/bench-kv"
            http.get(f"{kv}/gets", params={"n": 200}).raise_for_status()  # warm up
            http.get(f"{kv}/sets", params={"n": 200}).raise_for_status()
            gets = http.get(f"{kv}/gets", params={"n": ops}).json()
            sets = http.get(f"{kv}/sets", params={"n": ops}).json()
            burst = http.get(f"{kv}/burst", params={"n": ops}).json()
            direct, relayed = [], []
            for _ in range(50):  # warm up both paths
                http.get("/api/v1/m/bench-callee/ping")
                http.get(f"{kv}/relay")
            for _ in range(calls):
                start = time.perf_counter()
                http.get("/api/v1/m/bench-callee/ping").raise_for_status()
                direct.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                http.get(f"{kv}/relay").raise_for_status()
                relayed.append((time.perf_counter() - start) * 1000)
    finally:
        stop_server(process)
    return {
        "database": database,
        "get": (percentile(gets, 50), percentile(gets, 99)),
        "set": (percentile(sets, 50), percentile(sets, 99)),
        "sets_per_second": burst["sets"] / burst["seconds"],
        "direct": percentile(direct, 50),
        "relayed": percentile(relayed, 50),
    }


def in_process(database_url: str, ops: int) -> dict[str, Any]:
    """Time the store service's get and set in this process (µs p50 and p99)."""
    import asyncio

    from modhub.db import Database, upgrade
    from modhub.sandbox.channel import CallerContext, serve
    from modhub.store import ModuleStore
    from modhub.store.channel import StoreService

    db = Database(database_url)
    upgrade(db.engine)
    store = ModuleStore(db)
    services = {"store": StoreService(store, lambda module, version: 64 * 1024 * 1024).handle}
    contexts = {1: CallerContext(module="bench", version="1.0.0", user=None, job="j", deadline=0)}

    async def timed(op: str, args: Any) -> list[float]:
        times = []
        for i in range(ops):
            message = {"call": i, "rid": 1, "service": "store", "op": op, "args": args(i)}
            start = time.perf_counter_ns()
            reply = await serve(services, contexts, message, "bench")
            times.append((time.perf_counter_ns() - start) / 1000)
            assert reply["ok"], reply
        return times

    async def both() -> tuple[list[float], list[float]]:
        sets = await timed("set", lambda i: {"key": f"k{i % 100}", "value": {"v": i}})
        gets = await timed("get_entry", lambda i: {"key": f"k{i % 100}"})
        return gets, sets

    try:
        gets, sets = asyncio.run(both())
    finally:
        store.close()
        db.dispose()
    return {
        "get": (percentile(gets, 50), percentile(gets, 99)),
        "set": (percentile(sets, 50), percentile(sets, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=5000, help="store calls per measurement")
    parser.add_argument("--calls", type=int, default=1000, help="requests per call path")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"date: {utc_now()}")
    print(machine_summary())
    print(software("sqlalchemy", "psycopg", "uvicorn"))
    print(f"load average at start: {load_average()}")
    results, inside = [], []
    with tempfile.TemporaryDirectory(prefix="modhub-bench-services-") as folder:
        tmp = Path(folder)
        results.append(measure("SQLite", None, tmp, args.ops, args.calls))
        inside.append(("SQLite", in_process(f"sqlite:///{tmp / 'in-process.db'}", args.ops)))
        pg = None if args.no_postgres else postgres_database()
        if pg is not None:
            try:
                results.append(measure("PostgreSQL", pg, tmp, args.ops, args.calls))
            finally:
                drop_database(pg)
        pg = None if args.no_postgres else postgres_database()
        if pg is not None:
            try:
                inside.append(("PostgreSQL", in_process(pg, args.ops)))
            finally:
                drop_database(pg)
    print(f"load average at end: {load_average()}")
    print()
    print(
        "| database | get p50 ms | get p99 ms | set p50 ms | set p99 ms | sets/s (one module) "
        "| direct call p50 ms | through a module p50 ms | added p50 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['database']} | {r['get'][0]:.3f} | {r['get'][1]:.3f} | {r['set'][0]:.3f} "
            f"| {r['set'][1]:.3f} | {r['sets_per_second']:.0f} | {r['direct']:.2f} "
            f"| {r['relayed']:.2f} | {r['relayed'] - r['direct']:.2f} |"
        )
    print()
    print("In this process (the store service alone, no worker, no HTTP):")
    print("| database | get p50 µs | get p99 µs | set p50 µs | set p99 µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, figures in inside:
        get, put = figures["get"], figures["set"]
        print(f"| {name} | {get[0]:.0f} | {get[1]:.0f} | {put[0]:.0f} | {put[1]:.0f} |")
    sqlite = results[0]
    print()
    print("Targets (SQLite):")
    checks = [
        (f"get p50 <= 0.3 ms: {sqlite['get'][0]:.3f}", sqlite["get"][0] <= 0.3),
        (f"get p99 <= 2 ms: {sqlite['get'][1]:.3f}", sqlite["get"][1] <= 2),
        (f"set p50 <= 0.3 ms: {sqlite['set'][0]:.3f}", sqlite["set"][0] <= 0.3),
        (f"set p99 <= 2 ms: {sqlite['set'][1]:.3f}", sqlite["set"][1] <= 2),
        (f">= 5000 sets/s: {sqlite['sets_per_second']:.0f}", sqlite["sets_per_second"] >= 5000),
        (
            f"a call adds <= 1 ms at p50: {sqlite['relayed'] - sqlite['direct']:.2f}",
            sqlite["relayed"] - sqlite["direct"] <= 1,
        ),
    ]
    for text, passed in checks:
        print(f"{verdict(passed)}  {text}")


if __name__ == "__main__":
    main()
