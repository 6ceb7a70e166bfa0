"""Measure a cluster of modhub nodes on one PostgreSQL database (issue 13).

Run with `.venv/bin/python bench/cluster.py [--changes N] [--poll-changes N]
[--route-seconds S] [--modules N] [--seconds S] [--only propagation|route|registry]`.

1. Change propagation (below). 2. Module route throughput through HAProxy (Debian's
package; skipped with the reason without it): two nodes behind it against one, as a
ratio. 3. Registry list and detail p99 on PostgreSQL at 12 clients: `modhub serve
--workers 2` against one process. Every part runs on a PostgreSQL database of its own.

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

Route throughput: nodes A and B (own data dirs, one database, scheduler off), a module
`bench-echo` with one Python route (GET /ping answering a small JSON) installed through A
and called once on each node directly (B materializes it then). HAProxy (round robin, no
retries, `maxconn` per server high enough not to queue) is started in front of A alone,
then of A and B, and `--route-clients` keep-alive connections call the route back to back
through it for `--route-seconds` after a one-second warm-up (the load generator of
bench/api.py). Printed: requests/s, p50/p99, and the ratio of the two-node rate to the
one-node rate. On a 2-core machine each node and its module worker share the same two
cores with HAProxy and the load generator, so the ratio says how much of a second node a
machine this size can use, not how a cluster of machines scales.

Registry read path: `--modules` modules (10,000: the manifests of bench/api.py, each
with dependencies and a config with a secret) are written to the database, then `modhub
serve` (one process) and `modhub serve --workers 2` are measured in turn on it: 12
concurrent clients (`--clients`) for `--seconds` each on `GET /api/v1/modules?limit=50`
(a random page) and `GET /api/v1/modules/{name}` (random names), as bench/api.py does.
Target (issue 13): p99 under 40 ms for both with `--workers 2`. Each process keeps the
answers in the registry's read cache (dropped on every registry change): the list's 200
pages are cached after their first request, so the list mostly measures cached answers;
of the 10,000 names a run asks a few thousand, so most details are read from the
database (a detail's store use is read on every request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from api import Endpoint, Result, cpu_seconds, module_name, run_load, seed
from common import (
    free_port,
    install,
    library_versions,
    load_average,
    login,
    machine_summary,
    percentile,
    postgres_database,
    start_server,
    stop_server,
    utc_now,
    verdict,
)

TARGET_P99 = 0.200  # seconds
REGISTRY_TARGET_MS = 40.0
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


# -- module route throughput through HAProxy -------------------------------------------------

HAPROXY = """\
global
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 0

frontend modhub
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
{servers}
"""
ROUTE = "/api/v1/m/bench-echo/ping"
ECHO_HANDLER = "def handler(request):\n    return {'pong': True}\n"


def haproxy_binary() -> str | None:
    """Return Debian's haproxy, or None when it is not installed."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


def write_echo(folder: Path) -> Path:
    """Write the module `bench-echo` (GET /ping, a small JSON) into `folder`."""
    root = folder / "bench-echo"
    (root / "handlers").mkdir(parents=True)
    (root / "handlers" / "ping.py").write_text(ECHO_HANDLER)
    manifest = {
        "name": "bench-echo",
        "version": "1.0.0",
        "displayName": "Bench echo",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]}
        },
    }
    (root / "module.json").write_text(json.dumps(manifest))
    return root


def through_haproxy(
    binary: str, folder: Path, nodes: list[str], token: str, clients: int, seconds: float
) -> Result:
    """Start HAProxy in front of `nodes`, load the route through it, stop it."""
    port = free_port()
    servers = "\n".join(
        f"    server n{i} {url.removeprefix('http://')} maxconn 256" for i, url in enumerate(nodes)
    )
    config = folder / f"haproxy-{len(nodes)}.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    log = (folder / f"haproxy-{len(nodes)}.log").open("wb")
    balancer = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"HAProxy did not answer: {config}")
            time.sleep(0.1)
        route = Endpoint("GET /api/v1/m/bench-echo/ping", lambda _r: ("GET", ROUTE, None))
        return asyncio.run(run_load(url, token, route, clients, seconds, 1.0, balancer.pid))
    finally:
        balancer.terminate()
        balancer.wait(10)
        log.close()


def route_throughput(url: str, folder: Path, clients: int, seconds: float) -> bool | None:
    """Measure the module route through HAProxy with one node, then two; print the ratio."""
    binary = haproxy_binary()
    if binary is None:
        print("  skipped: HAProxy is not installed (the Debian package haproxy)")
        return None
    base = {"MODHUB_DATABASE_URL": url, "MODHUB_SCHEDULER": "false"}
    for node in ("a", "b"):
        (folder / node).mkdir(parents=True)
    node_a, url_a = start_server(folder / "a" / "data", base)
    try:
        node_b, url_b = start_server(folder / "b" / "data", base)
        try:
            token = login(url_a)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url_a, headers=headers, timeout=300) as a:
                install(a, write_echo(folder / "src"), folder)
            for node in (url_a, url_b):  # B materializes the module on its first call
                answer = httpx.get(node + ROUTE, headers=headers, timeout=300)
                if answer.status_code != 200:
                    raise SystemExit(f"{node}{ROUTE}: {answer.status_code} {answer.text}")
            one = through_haproxy(binary, folder, [url_a], token, clients, seconds)
            two = through_haproxy(binary, folder, [url_a, url_b], token, clients, seconds)
        finally:
            stop_server(node_b)
    finally:
        stop_server(node_a)
    for label, r in (("one node ", one), ("two nodes", two)):
        print(
            f"  {label}: {r.rps:.0f} req/s, p50 {r.percentile(50):.1f} ms, "
            f"p99 {r.percentile(99):.1f} ms, {r.errors} errors of {r.requests}"
        )
    ratio = two.rps / one.rps
    print(f"  two nodes / one node: {ratio:.2f}x the requests per second")
    return one.errors + two.errors == 0


# -- registry list and detail on PostgreSQL -----------------------------------------------------


def registry_reads(
    url: str, folder: Path, modules: int, clients: int, seconds: float
) -> list[tuple[str, bool]]:
    """Measure list and detail p99 with one process, then `--workers 2`; return verdicts."""
    started = time.perf_counter()
    seeding = seed(folder / "seed", modules, 0, url)
    print(f"  registry: {seeding.modules} modules written in {time.perf_counter() - started:.0f} s")
    pages = max(1, modules // 50)
    measured = [
        Endpoint(
            "GET /api/v1/modules?limit=50",
            lambda rng: (
                "GET",
                f"/api/v1/modules?limit=50&offset={50 * rng.randrange(pages)}",
                None,
            ),
        ),
        Endpoint(
            "GET /api/v1/modules/{name}",
            lambda rng: ("GET", f"/api/v1/modules/{module_name(rng.randint(1, modules))}", None),
        ),
    ]
    env = {"MODHUB_DATABASE_URL": url, "MODHUB_SCHEDULER": "false"}
    verdicts: list[tuple[str, bool]] = []
    for label, args in (("one process  ", ()), ("--workers 2  ", ("--workers", "2"))):
        data = folder / label.strip().replace(" ", "-") / "data"
        data.parent.mkdir(parents=True)
        process, server = start_server(data, env, args, wait=600)
        try:
            token = login(server)
            for endpoint in measured:
                result, split, cpu = asyncio.run(
                    observed(server, token, endpoint, clients, seconds, process.pid, url)
                )
                p99 = result.percentile(99)
                ok = p99 < REGISTRY_TARGET_MS and not result.errors
                print(
                    f"  {label} {endpoint.label}: {result.rps:.0f} req/s, "
                    f"p50 {result.percentile(50):.1f} ms, p99 {p99:.1f} ms, "
                    f"{result.errors} errors; p99 < {REGISTRY_TARGET_MS:.0f} ms: {verdict(ok)}"
                )
                per = 1000 / max(result.requests, 1)
                print(
                    f"  {' ' * len(label)} connections per server process {split}; CPU ms a "
                    f"request: server {cpu['server'] * per:.2f}, PostgreSQL "
                    f"{cpu['postgres'] * per:.2f}, load generator "
                    f"{result.client_cpu_seconds * per:.2f}"
                )
                if args:
                    verdicts.append((f"registry {endpoint.label} p99, --workers 2", ok))
        finally:
            stop_server(process)
    return verdicts


def _processes(parent: int) -> list[int]:
    """Return `parent` and every process below it."""
    found, todo = [], [parent]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    return found


def _cpu(pids: list[int]) -> dict[int, float]:
    """Return the CPU seconds each of `pids` has used so far (those still there)."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # gone since it was listed
            used[pid] = cpu_seconds(pid)
    return used


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    """Return the CPU seconds used between two `_cpu` readings (a process started in
    between counts from zero; one that ended in between is left out)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _postgres(url: str) -> list[int]:
    """Return the PostgreSQL backends serving clients on the database of `url` (their CPU
    is readable). Others' databases on the same server and autovacuum (busy after the
    seeding, at its own times) are left out; so is a backend that starts and ends between
    two readings (a connection opened and closed by the server)."""
    database = f" {url.rsplit('/', 1)[1]} ".encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            line = cmdline.read_bytes()
            if line.startswith(b"postgres: ") and database in line and b"autovacuum" not in line:
                pids.append(int(cmdline.parent.name))
    return pids


def _split(server: str, pids: list[int]) -> str:
    """Return how the load's connections to `server` fall on its processes ("7+5")."""
    port = server.rsplit(":", 1)[1]
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    counts = {pid: listing.count(f"pid={pid},") for pid in pids}
    return "+".join(str(n) for n in sorted(counts.values(), reverse=True) if n) or "?"


async def observed(
    server: str,
    token: str,
    endpoint: Endpoint,
    clients: int,
    seconds: float,
    pid: int,
    database: str,
) -> tuple[Result, str, dict[str, float]]:
    """Run the load on `endpoint`; also return how its connections fell on the server's
    processes and the CPU seconds the server (every process) and PostgreSQL's backends
    of `database` (a URL) used in it."""
    load = asyncio.create_task(run_load(server, token, endpoint, clients, seconds, 1.0, pid))
    await asyncio.sleep(1.0)  # the warm-up: every connection is open by now
    pids = _processes(pid)
    split = await asyncio.to_thread(_split, server, pids)
    server_cpu, postgres_cpu = _cpu(pids), _cpu(_postgres(database))
    result = await load
    cpu = {
        "server": _used(server_cpu, _cpu(pids)),
        "postgres": _used(postgres_cpu, _cpu(_postgres(database))),
    }
    return result, split, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="changes with the listener")
    parser.add_argument("--poll-changes", type=int, default=40, help="changes, poll only")
    parser.add_argument("--route-clients", type=int, default=16)
    parser.add_argument("--route-seconds", type=float, default=8.0)
    parser.add_argument("--modules", type=int, default=10_000, help="registry size")
    parser.add_argument("--clients", type=int, default=12, help="registry read clients")
    parser.add_argument("--seconds", type=float, default=8.0, help="registry read seconds")
    parser.add_argument("--only", choices=("propagation", "route", "registry"))
    args = parser.parse_args()
    print(f"date: {utc_now()}")
    print(f"machine: {machine_summary()}")
    print(f"software: {library_versions('sqlalchemy', 'psycopg', 'uvicorn')}")
    print(f"load average before: {load_average()}")
    verdicts: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="modhub-bench-cluster-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "propagation"):
            with postgres_database("modhub_bench_cluster") as url:
                if url is None:
                    print("change propagation: skipped")
                    return
                print(
                    "\nCHANGE PROPAGATION: two `modhub serve` nodes on one PostgreSQL database; "
                    "a status change through A until B serves it"
                )
                ok = measure(url, folder / "notify", "LISTEN/NOTIFY", {}, args.changes, 0.2)
                verdicts.append(("change propagation p99 (LISTEN/NOTIFY)", ok))
                off = {"MODHUB_LISTEN_CHANGES": "false"}
                ok = measure(url, folder / "poll", "poll only (1 s)", off, args.poll_changes, 1.0)
                verdicts.append(("change propagation p99 (poll only, for comparison)", ok))
        if args.only in (None, "route"):
            with postgres_database("modhub_bench_cluster") as url:
                print(
                    f"\nMODULE ROUTE THROUGH HAPROXY: {args.route_clients} clients, "
                    f"{args.route_seconds:.0f} s, one node then two"
                )
                if url is not None:
                    fine = route_throughput(
                        url, folder / "route", args.route_clients, args.route_seconds
                    )
                    if fine is not None:
                        verdicts.append(("module route through HAProxy: no errors", fine))
        if args.only in (None, "registry"):
            with postgres_database("modhub_bench_cluster") as url:
                print(
                    f"\nREGISTRY READS ON POSTGRESQL: {args.modules} modules, {args.clients} "
                    f"clients, {args.seconds:.0f} s per endpoint"
                )
                if url is not None:
                    verdicts += registry_reads(
                        url, folder / "registry", args.modules, args.clients, args.seconds
                    )
    print(f"\nload average after: {load_average()}")
    print("summary:")
    for name, ok in verdicts:
        print(f"  {verdict(ok)}  {name}")
    sys.exit(0)


if __name__ == "__main__":
    main()
