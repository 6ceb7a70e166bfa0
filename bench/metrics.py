"""Measure GET /metrics at scale and what the instrumentation costs a module route.

Run with `.venv/bin/python bench/metrics.py [--modules N] [--enabled N] [--scrapes N]
[--clients C] [--seconds S] [--rounds R]`.

1. Scrape: a server (SQLite, a temporary data dir) with `--modules` modules registered
   from bare manifests (one route each) and `--enabled` of them enabled, each route called
   once (its 501 makes series: module, route, status); then `--scrapes` sequential
   `GET /metrics` with an admin token. Target (issue 16): under 50 ms (the median; p95 and
   the exposition's size printed beside it).
2. Cost: two servers side by side, one as shipped and one with `MODHUB_METRICS=off`, each
   with bench/routes.py's module `bench-ping` (`GET /ping` in its worker). `--clients`
   keep-alive clients send `GET /api/v1/m/bench-ping/ping` back to back for `--seconds`
   to one server, then the other, for `--rounds` rounds (a machine getting busier or
   quieter affects both alike). Printed: each server's throughput, and its CPU time per
   request (server process, from /proc: the cost itself, less noisy than throughput on a
   shared machine). Target (issue 16): instrumentation costs at most 5 % of the module
   route's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import (
    install,
    login,
    machine_summary,
    percentile,
    proc_stat,
    start_server,
    stop_server,
    utc_now,
    verdict,
)
from routes import MODULE, write_module

SCRAPE_TARGET_MS = 50.0
COST_TARGET = 0.05
TICKS = os.sysconf("SC_CLK_TCK")  # /proc/*/stat counts CPU time in these


def bare(name: str) -> dict[str, object]:
    """Return a manifest with one route and no code (its route answers 501)."""
    return {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/items/:id", "handler": "h.py"}]}
        },
    }


def scrape(args: argparse.Namespace, tmp: Path) -> None:
    (tmp / "scrape").mkdir()
    server, url = start_server(tmp / "scrape" / "data")
    try:
        token = login(url)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:
            started = time.perf_counter()
            for i in range(args.modules):
                answer = client.post("/api/v1/modules", json={"manifest": bare(f"bench-m{i:04d}")})
                answer.raise_for_status()
            for i in range(args.enabled):
                name = f"bench-m{i:04d}"
                answer = client.put(f"/api/v1/modules/{name}/status", json={"status": "ENABLED"})
                answer.raise_for_status()
                client.get(f"/api/v1/m/{name}/items/{i}")  # 501: a series per module
            took = time.perf_counter() - started
            print(f"registered {args.modules} modules, enabled {args.enabled} in {took:.0f} s")
            client.get("/metrics").raise_for_status()  # warm
            times, size, lines = [], 0, 0
            cpu = cpu_seconds(server.pid)
            for _ in range(args.scrapes):
                began = time.perf_counter()
                answer = client.get("/metrics")
                times.append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
                size = len(answer.content)
                lines = sum(1 for line in answer.text.splitlines() if not line.startswith("#"))
            cpu = (cpu_seconds(server.pid) - cpu) / args.scrapes * 1000
        p50 = statistics.median(times)
        print(
            f"GET /metrics: p50 {p50:.1f} ms, p95 {percentile(times, 95):.1f} ms, "
            f"max {max(times):.1f} ms over {args.scrapes} scrapes; {size / 1024:.0f} KiB, "
            f"{lines} samples; server CPU {cpu:.1f} ms a scrape"
        )
        print(f"target: under {SCRAPE_TARGET_MS:g} ms (p50)  {verdict(p50 < SCRAPE_TARGET_MS)}")
    finally:
        stop_server(server)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process `pid` has used."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


async def load(url: str, token: str, clients: int, seconds: float) -> int:
    """Send the module route back to back from `clients` clients; return the answers."""
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> int:
        done = 0
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            while time.monotonic() < deadline:
                answer = await client.get(f"/api/v1/m/{MODULE}/ping")
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text}")
                done += 1
        return done

    return sum(await asyncio.gather(*(one() for _ in range(clients))))


def cost(args: argparse.Namespace, tmp: Path) -> None:
    source = write_module(tmp / "sources", MODULE)
    servers = {}
    try:
        for label, env in (("on", {}), ("off", {"MODHUB_METRICS": "off"})):
            (tmp / f"cost-{label}").mkdir()
            process, url = start_server(tmp / f"cost-{label}" / "data", env)
            token = login(url)
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
            ) as client:
                install(client, source, tmp)
                assert client.get(f"/api/v1/m/{MODULE}/ping").status_code == 200
                metrics = client.get("/metrics").status_code
                assert metrics == (200 if label == "on" else 404), metrics
            servers[label] = (process, url, token)
        totals = {label: [0, 0.0, 0.0] for label in servers}  # answers, seconds, cpu
        for _ in range(args.rounds):
            for label, (process, url, token) in servers.items():
                cpu = cpu_seconds(process.pid)
                began = time.perf_counter()
                answers = asyncio.run(load(url, token, args.clients, args.seconds))
                totals[label][0] += answers
                totals[label][1] += time.perf_counter() - began
                totals[label][2] += cpu_seconds(process.pid) - cpu
        rps = {label: t[0] / t[1] for label, t in totals.items()}
        cpu_ms = {label: t[2] / t[0] * 1000 for label, t in totals.items()}
        for label in servers:
            print(
                f"metrics {label:>3}: {rps[label]:,.0f} req/s, server CPU "
                f"{cpu_ms[label]:.3f} ms a request ({totals[label][0]:,} requests)"
            )
        lost = 1 - rps["on"] / rps["off"]
        extra = cpu_ms["on"] / cpu_ms["off"] - 1
        print(f"throughput cost: {lost:+.1%}; server CPU per request: {extra:+.1%}")
        print(
            f"target: at most {COST_TARGET:.0%} of the module route's throughput  "
            f"{verdict(lost <= COST_TARGET)}"
        )
    finally:
        for process, _, _ in servers.values():
            stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=1000, help="modules registered")
    parser.add_argument("--enabled", type=int, default=100, help="of them enabled")
    parser.add_argument("--scrapes", type=int, default=200, help="GET /metrics timed")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds a round a server")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, servers taking turns")
    parser.add_argument("--skip-scrape", action="store_true", help="only the cost")
    parser.add_argument("--skip-cost", action="store_true", help="only the scrape")
    args = parser.parse_args()
    print(f"# bench/metrics.py, {utc_now()}; {machine_summary()}")
    with tempfile.TemporaryDirectory(prefix="modhub-bench-metrics-") as folder:
        tmp = Path(folder)
        if not args.skip_scrape:
            print("\n== GET /metrics")
            scrape(args, tmp)
        if not args.skip_cost:
            print("\n== instrumentation cost (module route, metrics on against off)")
            cost(args, tmp)


if __name__ == "__main__":
    sys.exit(main())
