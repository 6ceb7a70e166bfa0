"""Measure events: the cost of one emit, emit → subscriber handler started at a steady rate,
and delivered events per second with a trivial subscriber, on SQLite and PostgreSQL.

Run with `.venv/bin/python bench/events.py [--rate 100] [--seconds 10] [--burst 3000]
[--no-postgres]`.

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
3. latency: with the dispatcher running, `--rate` emits per second for `--seconds`; for each
   event, the handler's start time minus the event's `emitted_at`; p50 and p99.
Targets (issue 14): emit p50 <= 0.5 ms; >= 1,000 delivered/s; p99 < 100 ms at 100 events/s
on one node. Two nodes are not measured by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    load_average,
    machine_summary,
    percentile,
    postgres_database,
    software,
    utc_now,
    verdict,
)
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
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
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


def pending(svc: Services) -> int:
    page = svc.events.store.search(status="pending", limit=1)
    running = svc.events.store.search(status="running", limit=1)
    return int(page["total"]) + int(running["total"])


async def measure(svc: Services, burst: int, rate: float, seconds: float) -> dict[str, Any]:
    for folder in modules(Path(tempfile.mkdtemp(prefix="bench-events-"))):
        svc.lifecycle.add_bundle(folder, actor="bench")
        done, _, op = svc.lifecycle.set_status(folder.name, Status.ENABLED, actor="bench")  # type: ignore[misc]
        assert done, op
    events = svc.events
    # Warm up: the catalog, the schema, the subscriber's worker.
    for n in range(20):
        events.emit("bench-source", "1.0.0", {"name": "tick", "payload": {"n": n}})
    runner = asyncio.create_task(svc.dispatcher.run())
    while pending(svc):
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await svc.dispatcher.drain()

    # 1. emit cost, delivery off: the awaited service call a worker's emit reaches.
    context = CallerContext("bench-source", "1.0.0", None, None, time.monotonic() + 3600)
    costs = []
    for n in range(burst):
        start = time.perf_counter()
        await events.handle(context, "emit", {"name": "tick", "payload": {"n": n}})
        costs.append((time.perf_counter() - start) * 1000)

    # 2. delivered/s of the stored burst.
    start = time.perf_counter()
    runner = asyncio.create_task(svc.dispatcher.run())
    while pending(svc):
        await asyncio.sleep(0.01)
    drained = time.perf_counter() - start

    # 3. emit -> handler started at `rate` per second, the dispatcher running.
    ids: list[tuple[int, float]] = []
    interval, count = 1 / rate, int(rate * seconds)
    began = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, began + n * interval - time.perf_counter()))
        emitted = time.time()
        done = await asyncio.to_thread(
            events.emit, "bench-source", "1.0.0", {"name": "tick", "payload": {"n": n, "probe": 1}}
        )
        ids.append((done["id"], emitted))
    while pending(svc):
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    latencies = []
    for event_id, _ in ids:
        stored = svc.events.store.get(event_id)
        emitted_at = datetime.fromisoformat(stored["emittedAt"]).timestamp()
        started = svc.store.get_entry("bench-sink", f"t/{event_id}")
        assert started is not None
        latencies.append((float(started.value) - emitted_at) * 1000)
    return {
        "emit_p50": percentile(costs, 50),
        "emit_p99": percentile(costs, 99),
        "delivered_per_s": burst / drained,
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "count": count,
    }


def run(database_url: str | None, label: str, args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-events-data-"))
    settings = Settings(
        data_dir=data,
        database_url=database_url,
        secret_key=SECRET,
        admin_password="bench password",
        pip_offline=True,
        scheduler=False,
        operation_wait_seconds=120,
    )
    svc = Services.start(settings)
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
    args = parser.parse_args()
    print(f"events benchmark, {utc_now()}")
    print(f"machine: {machine_summary()}")
    print(f"software: {software('sqlalchemy', 'psycopg')}")
    run(None, "SQLite (embedded)", args)
    if not args.no_postgres:
        with postgres_database("bench_events") as url:
            if url is not None:
                run(url, "PostgreSQL", args)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
