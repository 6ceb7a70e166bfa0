"""Measure events: the cost of one emit, emit → subscriber handler started at a steady rate,
and delivered events per second with a trivial subscriber, on SQLite and PostgreSQL.

Run with `.venv/bin/python bench/events.py [--rate 100] [--seconds 10] [--burst 3000]
[--no-postgres] [--nodes 1|2]`.

In one process (the server's own code, no HTTP): services on a temporary data dir, a
source module declaring `tick` (payload schema: an object with an integer `n`) and a
subscriber whose handler returns at once (in the latency phase it first notes the
wall-clock time it started in its store, by event id); its worker is a real sandboxed worker. Then:
1. emit cost: `--burst` emits, one after another, awaited through the `events` service's
   handler as a worker's call reaches it (`EventService.handle`: the check against the
   declared schema, the event and its delivery committed); p50 and p99. Delivery is off
   meanwhile.
2. delivered/s: the dispatcher (started after the burst) delivers the `--burst` events
   already stored; the time from its start to the last delivered row.
3. latency: with the dispatcher running, `--rate` emits per second for `--seconds` (each
   awaited through the service, as in 1); for each event, the handler's start time minus the
   event's `emitted_at`; p50 and p99.
4. two nodes (`--nodes 2`, the default; PostgreSQL only): a second node in a process of its
   own (`--serve-node`: its dispatcher and its listener of other nodes' emits, as `modhub
   serve` runs them) on a fresh database shared with this one; emits through this node at
   `--rate` for `--seconds`, first with only the second node dispatching (every delivery
   crosses nodes: NOTIFY, then a claim there), then with both dispatching (the handler runs
   on whichever claims first; both workers warm); p50 and p99 of each.
Targets (issue 14): emit p50 <= 0.5 ms; >= 1,000 delivered/s; p99 < 100 ms at 100 events/s
on one node; p99 < 300 ms with two nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from common import (
    load_average,
    machine_summary,
    percentile,
    postgres_database,
    software,
    utc_now,
    verdict,
)
from modhub.cluster.notify import libpq_url
from modhub.db.models import EventDelivery
from modhub.events.emitter import LoopConnection, Statement
from modhub.registry import Status
from modhub.sandbox.channel import CallerContext
from modhub.services import Services
from modhub.settings import Settings

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
SUBSCRIBER_CODE = """
import time


def handler(event):
    if event.payload.get("probe"):  # the latency phase: note when this handler started
        event.store.set(f"t/{event.id}", time.time())
"""


def write(root: Path, manifest: dict[str, Any], files: dict[str, str]) -> Path:
    folder = root / manifest["name"]
    folder.mkdir(parents=True)
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    (folder / "module.json").write_text(json.dumps(manifest))
    return folder


def modules(root: Path) -> tuple[Path, Path]:
    source = {
        "name": "bench-source",
        "version": "1.0.0",
        "displayName": "bench source",
        "capabilities": {
            "events": {
                "emits": [
                    {
                        "name": "tick",
                        "schema": {
                            "type": "object",
                            "properties": {"n": {"type": "integer"}},
                            "required": ["n"],
                        },
                    }
                ]
            }
        },
    }
    sink = {
        "name": "bench-sink",
        "version": "1.0.0",
        "displayName": "bench sink",
        "dependencies": {"modules": {"bench-source": "^1.0.0"}},
        "capabilities": {
            "events": {
                "subscribes": [{"event": "bench-source/tick", "handler": "events/on_tick.py"}]
            }
        },
    }
    return write(root, source, {}), write(root, sink, {"events/on_tick.py": SUBSCRIBER_CODE})


def unfinished(svc: Services) -> int:
    """Count the deliveries not yet delivered (one indexed count)."""
    with svc.db.query() as connection:
        found = connection.scalar(
            select(func.count())
            .select_from(EventDelivery)
            .where(EventDelivery.status.in_(("pending", "running")))
        )
    return int(found or 0)


async def pending(svc: Services) -> int:
    """`unfinished`, in a thread: the dispatcher measured shares this event loop, and a
    count on the loop (search() took 13 ms on PostgreSQL at 3,000 events, every 10 ms)
    starved it: the figure was the poll's, not the dispatcher's."""
    return await asyncio.to_thread(unfinished, svc)


CONTEXT = CallerContext("bench-source", "1.0.0", None, None, time.monotonic() + 86400)


def install(svc: Services) -> None:
    """Add and enable the source and the subscriber."""
    for folder in modules(Path(tempfile.mkdtemp(prefix="bench-events-"))):
        svc.lifecycle.add_bundle(folder, actor="bench")
        done, _, op = svc.lifecycle.set_status(folder.name, Status.ENABLED, actor="bench")  # type: ignore[misc]
        assert done, op


async def paced(
    svc: Services, rate: float, seconds: float, costs: list[float] | None = None
) -> list[int]:
    """Emit probes at `rate` per second for `seconds`, each awaited through the `events`
    service as a worker's emit reaches it; return the event ids (and append each emit's
    cost in ms to `costs`)."""
    ids: list[int] = []
    interval, count = 1 / rate, int(rate * seconds)
    began = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, began + n * interval - time.perf_counter()))
        args = {"name": "tick", "payload": {"n": n, "probe": 1}}
        start = time.perf_counter()
        ids.append((await svc.events.handle(CONTEXT, "emit", args))["id"])
        if costs is not None:
            costs.append((time.perf_counter() - start) * 1000)
    return ids


def handler_started(svc: Services, ids: list[int]) -> list[tuple[float, str]]:
    """Return, for each event, its emit -> handler started time (ms) and which dispatcher
    ran it (the owner that recorded its delivery)."""
    found = []
    for event_id in ids:
        stored = svc.events.store.get(event_id)
        emitted_at = datetime.fromisoformat(stored["emittedAt"]).timestamp()
        started = svc.store.get_entry("bench-sink", f"t/{event_id}")
        assert started is not None
        with svc.db.read() as session:
            owner = session.scalar(
                select(EventDelivery.claimed_by).where(EventDelivery.event_id == event_id)
            )
        found.append(((float(started.value) - emitted_at) * 1000, str(owner)))
    return found


async def commit_floor(svc: Services, count: int, rate: float | None = None) -> float:
    """Return the p50 in ms of the database's own commit, measured right after the emits:
    a one-row INSERT, prepared, in autocommit, sent from the event loop the way the emitter
    sends its statement (a `LoopConnection`), back to back or `rate` per second. The emit's
    cost less this is what modhub adds; this part moves with the machine's disk and what it
    wrote lately, and paced, with the idle CPUs' waking."""
    with svc.db.query() as connection:
        connection.execute(text("CREATE TABLE bench_floor (n integer)"))
    link = await LoopConnection.open(libpq_url(svc.settings.db_url), "bench-floor")
    try:
        insert = Statement(b"floor", b"INSERT INTO bench_floor (n) VALUES ($1)")
        costs = []
        began = time.perf_counter()
        for n in range(count):
            if rate is not None:
                await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            start = time.perf_counter()
            await link.run(insert, [str(n).encode()])
            costs.append((time.perf_counter() - start) * 1000)
    finally:
        link.close()
    with svc.db.query() as connection:
        connection.execute(text("DROP TABLE bench_floor"))
    return percentile(costs, 50)


async def measure(svc: Services, burst: int, rate: float, seconds: float) -> dict[str, Any]:
    install(svc)
    events = svc.events
    # Warm up: the catalog, the schema, the subscriber's worker.
    for n in range(20):
        events.emit("bench-source", "1.0.0", {"name": "tick", "payload": {"n": n}})
    runner = asyncio.create_task(svc.dispatcher.run())
    while await pending(svc):
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await svc.dispatcher.drain()

    # 1. emit cost, delivery off: the awaited service call a worker's emit reaches.
    costs = []
    cpu = time.process_time()
    for n in range(burst):
        start = time.perf_counter()
        await events.handle(CONTEXT, "emit", {"name": "tick", "payload": {"n": n}})
        costs.append((time.perf_counter() - start) * 1000)
    cpu_per_emit = (time.process_time() - cpu) / burst * 1000
    floor = await commit_floor(svc, burst) if svc.db.dialect == "postgresql" else None

    # 2. delivered/s of the stored burst.
    start = time.perf_counter()
    runner = asyncio.create_task(svc.dispatcher.run())
    while await pending(svc):
        await asyncio.sleep(0.01)
    drained = time.perf_counter() - start

    # 3. emit -> handler started at `rate` per second, the dispatcher running.
    paced_costs: list[float] = []
    ids = await paced(svc, rate, seconds, paced_costs)
    while await pending(svc):
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    latencies = [ms for ms, _ in handler_started(svc, ids)]
    paced_floor = None
    if svc.db.dialect == "postgresql":
        paced_floor = await commit_floor(svc, int(rate * 3), rate)
    return {
        "paced_emit_p50": percentile(paced_costs, 50),
        "paced_floor_p50": paced_floor,
        "floor_p50": floor,
        "emit_p50": percentile(costs, 50),
        "emit_cpu": cpu_per_emit,
        "emit_p99": percentile(costs, 99),
        "delivered_per_s": burst / drained,
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "count": len(ids),
    }


def node_settings(database_url: str | None) -> Settings:
    """Return the settings of one node on its own temporary data dir."""
    return Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-events-data-")),
        database_url=database_url,
        secret_key=SECRET,
        admin_password="bench password",
        pip_offline=True,
        scheduler=False,
        operation_wait_seconds=120,
    )


def serve_node(database_url: str) -> None:
    """Be the second node (a process of its own): its dispatcher and its listener of other
    nodes' emits (NOTIFY), as `modhub serve` runs them, until stdin closes. Prints its
    dispatcher's owner when it is ready."""
    svc = Services.start(node_settings(database_url))

    async def main() -> None:
        background = [asyncio.create_task(svc.dispatcher.run())]
        for listener in (svc.event_listener(), svc.change_listener()):
            if listener is not None:
                background.append(asyncio.create_task(listener.run()))
        print(svc.dispatcher.owner, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await svc.dispatcher.drain()
        await svc.pool.close()

    try:
        asyncio.run(main())
    finally:
        svc.close()


async def delivered_all(svc: Services, ids: list[int]) -> None:
    """Wait until every one of these events was delivered."""
    while await pending(svc):
        await asyncio.sleep(0.05)
    assert all(svc.store.get_entry("bench-sink", f"t/{i}") is not None for i in ids)


async def measure_nodes(svc: Services, other: str, rate: float, seconds: float) -> dict[str, Any]:
    """Two nodes on one database, every emit through this one: (a) only the other node
    dispatches (each delivery crosses nodes: NOTIFY, claim there); (b) both dispatch, the
    handler started on whichever claims first."""
    install(svc)
    await delivered_all(svc, await paced(svc, 20, 1))  # warm: the other node's worker
    crossing = handler_started(svc, await paced(svc, rate, seconds))
    await delivered_all(svc, [])
    background = [asyncio.create_task(svc.dispatcher.run())]
    listener = svc.event_listener()
    if listener is not None:
        background.append(asyncio.create_task(listener.run()))
    for _ in range(10):  # warm: this node's worker too (its cold start is not measured)
        await delivered_all(svc, await paced(svc, 20, 0.5))
        if any(key.startswith("bench-sink") for key in svc.pool.workers):
            break
    ids = await paced(svc, rate, seconds)
    await delivered_all(svc, ids)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await svc.dispatcher.drain()
    both = handler_started(svc, ids)
    assert all(owner == other for _, owner in crossing), "only the other node dispatched"
    return {"crossing": [ms for ms, _ in crossing], "both": both}


def run_nodes(database_url: str, args: argparse.Namespace) -> None:
    """Print emit -> handler started with two nodes (PostgreSQL)."""
    node = subprocess.Popen(
        [sys.executable, __file__, "--serve-node", database_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert node.stdin is not None
    assert node.stdout is not None
    try:
        other = node.stdout.readline().strip()
        assert other, "the second node did not start"
        svc = Services.start(node_settings(database_url))
        try:

            async def main() -> dict[str, Any]:
                try:
                    return await measure_nodes(svc, other, args.rate, args.seconds)
                finally:
                    await svc.pool.close()

            figures = asyncio.run(main())
        finally:
            svc.close()
    finally:
        node.stdin.close()
        node.wait(timeout=60)
    crossing = figures["crossing"]
    both = [ms for ms, _ in figures["both"]]
    there = sum(1 for _, owner in figures["both"] if owner == other)
    print("\nPostgreSQL, two nodes (emits through node 1)")
    print(
        f"  emit -> handler started at {args.rate:g}/s, only node 2 dispatching: "
        f"p50 {percentile(crossing, 50):.1f} ms, p99 {percentile(crossing, 99):.1f} ms "
        f"({len(crossing)} events)  {verdict(percentile(crossing, 99) < 300)} (p99 < 300 ms)"
    )
    print(
        f"  emit -> handler started at {args.rate:g}/s, both dispatching: "
        f"p50 {percentile(both, 50):.1f} ms, p99 {percentile(both, 99):.1f} ms "
        f"({len(both)} events, {there} run on node 2)  "
        f"{verdict(percentile(both, 99) < 300)} (p99 < 300 ms)"
    )


def run(database_url: str | None, label: str, args: argparse.Namespace) -> None:
    svc = Services.start(node_settings(database_url))
    try:

        async def main() -> dict[str, Any]:
            try:
                return await measure(svc, args.burst, args.rate, args.seconds)
            finally:
                await svc.pool.close()

        figures = asyncio.run(main())
    finally:
        svc.close()
    print(f"\n{label}")
    print(
        f"  emit cost: p50 {figures['emit_p50']:.2f} ms, p99 {figures['emit_p99']:.2f} ms "
        f"({args.burst} emits)  {verdict(figures['emit_p50'] <= 0.5)} (p50 <= 0.5 ms)"
    )
    print(f"  this process's CPU (user + system) per emit: {figures['emit_cpu']:.3f} ms")
    if figures["floor_p50"] is not None:
        print(
            f"  the database's own commit in the same minute (a one-row INSERT, prepared, "
            f"autocommit): p50 {figures['floor_p50']:.2f} ms; the emit adds "
            f"{figures['emit_p50'] - figures['floor_p50']:.2f} ms"
        )
    print(
        f"  emit cost at {args.rate:g}/s, the dispatcher running (phase 3's emits): "
        f"p50 {figures['paced_emit_p50']:.2f} ms"
    )
    if figures["paced_floor_p50"] is not None:
        print(
            f"  the database's own commit at {args.rate:g}/s, after phase 3: p50 "
            f"{figures['paced_floor_p50']:.2f} ms (the machine's idle CPUs wake for each)"
        )
    print(
        f"  delivered: {figures['delivered_per_s']:.0f} events/s ({args.burst} stored events, "
        f"one subscriber)  {verdict(figures['delivered_per_s'] >= 1000)} (>= 1,000/s)"
    )
    print(
        f"  emit -> handler started at {args.rate:g}/s: p50 {figures['latency_p50']:.1f} ms, "
        f"p99 {figures['latency_p99']:.1f} ms ({figures['count']} events)  "
        f"{verdict(figures['latency_p99'] < 100)} (p99 < 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2)
    parser.add_argument("--serve-node", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_node:
        serve_node(args.serve_node)
        return
    print(f"events benchmark, {utc_now()}")
    print(f"machine: {machine_summary()}")
    print(f"software: {software('sqlalchemy', 'psycopg')}")
    run(None, "SQLite (embedded)", args)
    if not args.no_postgres:
        with postgres_database("bench_events") as url:
            if url is not None:
                run(url, "PostgreSQL", args)
        if args.nodes == 2:
            with postgres_database("bench_events_nodes") as url:
                if url is not None:
                    run_nodes(url, args)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
