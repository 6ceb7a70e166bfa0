"""Measure the REST API against a real uvicorn server with 10,000 registered modules.

Run with `.venv/bin/python bench/api.py [--modules N] [--clients C] [--seconds S]`.

1. Fill an embedded SQLite database in a temporary data dir with `--modules` modules,
   each depending on one or two earlier ones (module i on i//2 and i//3, `^1.0.0`).
   Every manifest goes through `parse_manifest` (the registry's validation). All but
   the last `--registered` modules are then written in one transaction with the same
   rows `Registry.register` writes (module, version with its manifest, dependencies,
   initial config); the last `--registered` go through `Registry.register` itself, one
   transaction each, so that its cost at this registry size is measured too.
2. Start `python -m modhub serve` on a free port on that data dir (one uvicorn process,
   as `make run` does), log in as admin.
3. For each endpoint, in this process: `--clients` concurrent keep-alive connections send
   requests back to back for `--seconds` seconds after a one-second warm-up; then one
   connection alone for `--serial-seconds` (the latency of a request with no queue).
   Endpoints: `GET /healthz` (the baseline), `GET /api/v1/modules?limit=50` (a random
   page), `GET /api/v1/modules/{name}` (random names), `POST /api/v1/modules/validate`
   (the seed's vmware-vcenter manifest). The baseline runs first and last, to show
   drift on a busy machine. The timed requests use a minimal HTTP/1.1 client (see
   `Connection`): httpx itself saturated this process's core before the server's.

Columns: `server CPU ms/req` is the server process's CPU time (all threads, from
/proc) over the requests it answered: the cost of a request, which a busy machine
changes much less than it changes wall-clock rates. `server CPU` and `client CPU` are
the share of one core each process used; a client near 100 % would mean the client,
not the server, was measured.

Targets: p99 < 25 ms for list and detail under the concurrent load, and detail
throughput at least a third of healthz throughput. Each is printed as PASS or MISS;
the one-client figures are printed after them for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from common import (
    PASSWORD,
    SECRET,
    VMWARE_FIXTURE,
    cpu_model,
    git_commit,
    load_average,
    login,
    percentile,
    proc_stat,
    software,
    start_server,
    stop_server,
    utc_now,
    verdict,
)
from modhub.db import Database, upgrade
from modhub.db.models import Module, ModuleDependency, ModuleVersion
from modhub.keys import SecretBox
from modhub.registry import Status
from modhub.registry import config as configs
from modhub.registry.service import parse_manifest
from modhub.services import Services
from modhub.settings import Settings

P99_TARGET_MS = 25.0
DETAIL_SHARE_TARGET = 1 / 3


def module_name(i: int) -> str:
    """Return the name of bench module `i` (1-based)."""
    return f"bench-{i:05d}"


def manifest_for(i: int) -> dict[str, Any]:
    """Return the manifest of bench module `i`: a route, a config with a secret, deps."""
    deps = {module_name(j): "^1.0.0" for j in sorted({i // 2, i // 3}) if 0 < j < i}
    return {
        "name": module_name(i),
        "version": "1.0.0",
        "displayName": f"Bench Module {i}",
        "description": f"Benchmark module number {i}",
        "author": "bench",
        "license": "MIT",
        "capabilities": {
            "api": {
                "routes": [
                    {"method": "GET", "path": "/items", "handler": "handlers/items.py"},
                    {"method": "POST", "path": "/items", "handler": "handlers/items.py:create"},
                ]
            }
        },
        "dependencies": {"modules": deps},
        "config": {
            "schema": {
                "host": {"type": "string", "label": "Host", "default": "localhost"},
                "token": {"type": "password", "label": "Token", "sensitive": True},
                "interval": {"type": "integer", "default": 5, "validation": {"min": 1}},
            }
        },
        "permissions": [f"{module_name(i)}:read"],
    }


@dataclass
class Seeding:
    """How long filling the registry took."""

    modules: int
    bulk: int
    bulk_seconds: float
    registered: int
    register_seconds: float


def seed(data_dir: Path, count: int, registered: int, database_url: str | None) -> Seeding:
    """Fill the database (embedded in `data_dir` unless `database_url`) with `count`
    modules; time both ways."""
    settings = Settings(
        data_dir=data_dir, secret_key=SECRET, admin_password=PASSWORD, database_url=database_url
    )
    if database_url:  # a server database is migrated by `modhub db upgrade`, not at start
        db = Database(settings.db_url)
        upgrade(db.engine)
        db.dispose()
    services = Services.start(settings)
    box = SecretBox(SECRET)
    bulk = max(0, count - registered)
    try:
        started = time.perf_counter()
        with services.db.write() as session:
            for i in range(1, bulk + 1):
                data = manifest_for(i)
                manifest = parse_manifest(data)
                module = Module(
                    name=manifest.name,
                    version=manifest.version,
                    status=Status.REGISTERED,
                    config=configs.initial_config(manifest, box),
                    display_name=manifest.display_name,
                    description=manifest.description,
                    author=manifest.author,
                    license=manifest.license,
                )
                module.dependencies = [
                    ModuleDependency(depends_on=dep, version_range=rng)
                    for dep, rng in manifest.dependencies.modules.items()
                ]
                module.versions = [ModuleVersion(version=manifest.version, manifest=data)]
                session.add(module)
                if i % 1000 == 0:
                    session.flush()
                    session.expunge_all()
        bulk_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(bulk + 1, count + 1):
            services.registry.register(manifest_for(i), actor="bench")
        register_seconds = time.perf_counter() - started
        total = services.registry.list_modules(limit=1).total
        assert total == count, f"{total} modules registered, not {count}"
    finally:
        services.close()
    return Seeding(count, bulk, bulk_seconds, count - bulk, register_seconds)


Request = tuple[str, str, bytes | None]  # method, path with query, JSON body


@dataclass
class Endpoint:
    """One measured request kind: a label and a function that makes one request."""

    label: str
    make: Callable[[random.Random], Request]


@dataclass
class Result:
    """What one endpoint did under one load."""

    label: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        """Return completed requests per second."""
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Return the server's CPU time per request in milliseconds (all its threads)."""
        return 1000 * self.server_cpu_seconds / max(self.requests, 1)

    def percentile(self, q: float) -> float:
        """Return the q-th percentile latency in milliseconds (nearest rank)."""
        return percentile(self.latencies_ms, q)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process `pid` has used so far."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection: the load generator's client.

    httpx's AsyncClient costs about 1 ms of CPU a request; at 12 clients it saturated
    this process's core at ~900 req/s of /healthz while the server was half idle, so the
    baseline measured the client. This client writes the request bytes itself and reads
    the status line, the headers and `Content-Length` bytes of body (every modhub answer
    has one), at a small fraction of that cost. It is used for the timed requests only;
    everything else goes through httpx.
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host = host
        self.port = port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """Send one request and return the status code and the body."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + (body or b"")
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                self.reader = None
        if length is None:
            raise RuntimeError(f"{method} {path}: an answer without Content-Length")
        data = await self.reader.readexactly(length) if self.reader else b""
        return status, data

    def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()


async def run_load(
    url: str,
    token: str,
    endpoint: Endpoint,
    clients: int,
    seconds: float,
    warmup: float,
    server_pid: int,
) -> Result:
    """Send requests from `clients` concurrent connections for `seconds`, after `warmup`."""
    parsed = httpx.URL(url)
    connections = [Connection(parsed.host, parsed.port or 80, token) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    phase = {"measuring": False}

    async def worker(connection: Connection, seed: int, until: float) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < until:
            method, path, body = endpoint.make(rng)
            start = time.perf_counter()
            status, _ = await connection.request(method, path, body)
            elapsed = (time.perf_counter() - start) * 1000
            if not phase["measuring"]:
                continue
            if status != 200:
                errors += 1
            latencies.append(elapsed)

    try:
        warm_until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(c, i, warm_until) for i, c in enumerate(connections)))
        phase["measuring"] = True
        cpu_before = cpu_seconds(server_pid)
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(
            *(worker(c, 1000 + i, started + seconds) for i, c in enumerate(connections))
        )
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server_pid) - cpu_before
        client_cpu = time.process_time() - client_before
    finally:
        for connection in connections:
            connection.close()
    return Result(
        endpoint.label, clients, len(latencies), errors, elapsed, latencies, cpu, client_cpu
    )


def endpoints(count: int) -> list[Endpoint]:
    """Return the measured endpoints."""
    vmware = json.dumps({"manifest": json.loads(VMWARE_FIXTURE.read_text())}).encode()
    pages = max(1, count // 50)

    def page(rng: random.Random) -> Request:
        return ("GET", f"/api/v1/modules?limit=50&offset={50 * rng.randrange(pages)}", None)

    return [
        Endpoint("GET /healthz", lambda _rng: ("GET", "/healthz", None)),
        Endpoint("GET /api/v1/modules?limit=50", page),
        Endpoint(
            "GET /api/v1/modules/{name}",
            lambda rng: ("GET", f"/api/v1/modules/{module_name(rng.randint(1, count))}", None),
        ),
        Endpoint(
            "POST /api/v1/modules/validate",
            lambda _rng: ("POST", "/api/v1/modules/validate", vmware),
        ),
    ]


def check_answers(url: str, token: str, count: int) -> None:
    """Fail early if an endpoint does not answer what the benchmark expects."""
    headers = {"Authorization": f"Bearer {token}"}
    page = httpx.get(url + "/api/v1/modules", params={"limit": 50}, headers=headers).json()
    assert page["total"] == count, page
    assert len(page["items"]) == 50, page
    detail = httpx.get(url + f"/api/v1/modules/{module_name(count)}", headers=headers).json()
    assert detail["dependencies"], detail
    assert all(d["satisfied"] for d in detail["dependencies"]), detail
    assert detail["config"] == {"host": "localhost", "interval": 5}, detail["config"]
    dependents = httpx.get(url + f"/api/v1/modules/{module_name(1)}", headers=headers).json()
    assert len(dependents["dependents"]) >= 2, dependents["dependents"]
    vmware = {"manifest": json.loads(VMWARE_FIXTURE.read_text())}
    answer = httpx.post(url + "/api/v1/modules/validate", json=vmware, headers=headers).json()
    assert answer["valid"] is True, answer


def machine() -> list[str]:
    """Return lines describing this machine and the software measured."""
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    commit, dirty = git_commit()
    described = f"{commit}-dirty" if commit and dirty else commit
    return [
        f"date: {utc_now()}; commit {described or 'unknown'}",
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs{memory}; {platform.platform()}",
        software("fastapi", "uvicorn", "httptools", "sqlalchemy", "pyjwt", "httpx"),
    ]


def main() -> None:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--registered", type=int, default=200,
                        help="how many of the modules go through Registry.register")  # fmt: skip
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serial-seconds", type=float, default=3.0)
    parser.add_argument("--keep", action="store_true", help="keep the data dir (path printed)")
    parser.add_argument(
        "--reuse", type=Path, help="a data dir kept by --keep: skip filling the registry"
    )
    parser.add_argument(
        "--database-url",
        help="an empty PostgreSQL database to use instead of the embedded SQLite one "
        "(the targets are for SQLite; this shows the server-database path)",
    )
    args = parser.parse_args()

    for line in machine():
        print(line)
    print(f"load average at start: {load_average()}")
    if args.reuse:
        tmp, data_dir = args.reuse.parent, args.reuse
        args.keep = True
        print(f"registry: reusing {data_dir}")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="modhub-bench-api-"))
        data_dir = tmp / "data"
        seeding = seed(data_dir, args.modules, args.registered, args.database_url)
        bulk_rate = seeding.bulk / max(seeding.bulk_seconds, 1e-9)
        print(
            f"registry: {seeding.modules} modules; {seeding.bulk} written in one transaction "
            f"in {seeding.bulk_seconds:.1f} s ({bulk_rate:.0f}/s, each manifest validated); "
            f"the last {seeding.registered} through Registry.register in "
            f"{seeding.register_seconds:.1f} s "
            f"({1000 * seeding.register_seconds / max(seeding.registered, 1):.1f} ms each)"
        )
    database = {"MODHUB_DATABASE_URL": args.database_url} if args.database_url else {}
    print(f"database: {args.database_url.split('@')[-1] if args.database_url else 'SQLite'}")
    process, url = start_server(data_dir, database)
    try:
        token = login(url)
        check_answers(url, token, args.modules)
        measured = endpoints(args.modules)
        plan = [
            (e, c, s)
            for e in measured
            for c, s in ((args.clients, args.seconds), (1, args.serial_seconds))
        ]
        plan.append((measured[0], args.clients, args.seconds))  # the baseline again, last
        results: list[Result] = []
        for endpoint, clients, seconds in plan:
            result = asyncio.run(run_load(url, token, endpoint, clients, seconds, 1.0, process.pid))
            results.append(result)
            print(
                f"  measured {result.label} with {clients} client(s): {result.rps:.0f} req/s",
                file=sys.stderr,
            )
    finally:
        stop_server(process)
    print(f"load average at end: {load_average()}")
    print()
    print(
        "| endpoint | clients | requests | req/s | p50 ms | p99 ms | mean ms "
        "| server CPU ms/req | server CPU | client CPU | errors |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in results:
        print(
            f"| `{r.label}` | {r.clients} | {r.requests} | {r.rps:.0f} | {r.percentile(50):.1f} | "
            f"{r.percentile(99):.1f} | {statistics.fmean(r.latencies_ms):.1f} | "
            f"{r.cpu_ms:.2f} | {100 * r.server_cpu_seconds / r.seconds:.0f}% | "
            f"{100 * r.client_cpu_seconds / r.seconds:.0f}% | {r.errors} |"
        )
    print()
    loaded = [r for r in results if r.clients == args.clients]
    by_label = {r.label: r for r in loaded}
    baselines = [r for r in loaded if r.label == "GET /healthz"]
    health = max(baselines, key=lambda r: r.rps)
    detail = by_label["GET /api/v1/modules/{name}"]
    where = " (set for SQLite; PostgreSQL shown against them)" if args.database_url else ""
    print(f"Targets{where}, under the load of {args.clients} concurrent clients:")
    for label in ("GET /api/v1/modules?limit=50", "GET /api/v1/modules/{name}"):
        p99 = by_label[label].percentile(99)
        mark = verdict(p99 < P99_TARGET_MS)
        print(f"{mark}  p99 of `{label}` < {P99_TARGET_MS:.0f} ms: {p99:.1f} ms")
    share = detail.rps / health.rps
    mark = verdict(share >= DETAIL_SHARE_TARGET)
    print(
        f"{mark}  detail throughput >= 1/3 of healthz: {share:.2f} ({detail.rps:.0f} vs "
        f"{health.rps:.0f} req/s, the better of the healthz runs "
        f"{' and '.join(f'{r.rps:.0f}' for r in baselines)})"
    )
    alone = {r.label: r for r in results if r.clients == 1}
    print("For comparison, one client at a time (no queue; not the target's condition):")
    for label in ("GET /api/v1/modules?limit=50", "GET /api/v1/modules/{name}"):
        print(f"      p99 of `{label}`: {alone[label].percentile(99):.1f} ms")
    share = alone["GET /api/v1/modules/{name}"].rps / alone["GET /healthz"].rps
    print(f"      detail throughput / healthz throughput: {share:.2f}")
    total_errors = sum(r.errors for r in results)
    if total_errors:
        print(f"ERRORS: {total_errors} answers were not 200")
    if args.keep:
        print(f"data dir kept: {data_dir}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if total_errors else 0)


if __name__ == "__main__":
    main()
