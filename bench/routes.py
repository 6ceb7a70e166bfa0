"""Measure module routes (a handler in its worker) against routes built into the server.

Run with `.venv/bin/python bench/routes.py [--clients C] [--seconds S] [--idle-modules N]`.

1. Write a tiny module `bench-ping` (`GET /ping` returns `{"ok": true}`) and `--idle-modules`
   copies of it (`bench-idle-00`...), in a temporary folder.
2. Start `python -m modhub serve` on a free port with a temporary SQLite data dir, log in as
   admin, and install and enable every module as a client would: `pack_folder`, then
   `POST /api/v1/modules/bundles` and `PUT /api/v1/modules/{name}/status` (following the
   operation when it answers 202).
3. Under load: `--clients` concurrent httpx clients (keep-alive connections) send requests
   back to back, `--seconds` per target; then one client alone, `--serial-seconds` per
   target, for the latency of a request with no queue. The targets take turns in `--rounds`
   short rounds, so that a machine getting busier or quieter affects them alike:
   - `GET /api/v1/schemas/manifest`: built in, authenticated (two indexed reads), answers a
     static 10 KB dict; the native baseline the targets are checked against.
   - `GET /healthz`: built in, no authentication, one `SELECT 1`.
   - `GET /api/v1/m/bench-ping/nope`: the module dispatcher answering 404 on its own:
     authentication and route matching, no config read and no worker.
   - `GET /api/v1/m/bench-ping/ping`: the module route: authentication, matching, the
     module's config read, a round trip to its worker, `{"ok": true}`.
   For the server, its workers and this client, /proc/*/task/*/schedstat gives the CPU time
   per request and the time spent runnable but waiting for a CPU: on a busy machine that
   wait, not the code, can dominate the latency.
4. Cold workers: the first request to each idle module starts its worker (bubblewrap where
   installed, the module environment's python, the handler's import); its latency is
   printed beside the second request's.
5. Memory: RSS and PSS of each idle worker, summed over its process tree (bwrap's own
   processes included), from /proc.

With `--profile`, one more module-route load runs under py-spy (`pip install py-spy` into the
venv; it is not a dependency) sampling the server and its workers, and the script prints where
each process spends its time: the functions on the stack (inclusive) and at its top (self),
leaving out samples of threads that wait (epoll, a blocking read, a queue).

Targets (issue 5): the module route adds at most 1 ms at p50 (with one client, where no
queue adds to it; the figure under load is printed too) and keeps at least half the native
route's throughput. Each is printed as PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from common import (
    cpu_model,
    git_commit,
    install,
    library_versions,
    load_average,
    login,
    percentile,
    proc_stat,
    python_build,
    start_server,
    stop_server,
    utc_now,
    verdict,
)
from modhub.sandbox import isolation

MODULE = "bench-ping"
ADDED_P50_TARGET_MS = 1.0
THROUGHPUT_SHARE_TARGET = 0.5
HANDLER = '"""GET /ping: trivial work."""\n\n\ndef handler(request):\n    return {"ok": True}\n'


# -- the modules and the server ------------------------------------------------------------------


def write_module(folder: Path, name: str) -> Path:
    """Write a module `name` with one route, GET /ping, into `folder/name`."""
    root = folder / name
    (root / "handlers").mkdir(parents=True)
    (root / "handlers" / "ping.py").write_text(HANDLER)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "displayName": f"Bench {name}",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]}
        },
    }
    (root / "module.json").write_text(json.dumps(manifest, indent=2))
    return root


# -- /proc -------------------------------------------------------------------------------------


def children() -> dict[int, list[int]]:
    """Return every process's children, by parent pid."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(proc_stat(int(entry.name))[1])
        except OSError:
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> Iterator[int]:
    """Yield the pids below `pid`."""
    for child in tree.get(pid, []):
        yield child
        yield from descendants(child, tree)


def memory_kb(pid: int) -> tuple[int, int]:
    """Return (RSS, PSS) of process `pid` in KiB (0, 0 if it is gone)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in rollup.splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values.get("Rss", 0), values.get("Pss", 0)


def command_line(pid: int) -> list[str]:
    """Return the argv of process `pid` ([] if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass
class WorkerTree:
    """One worker: the server's child process and everything below it."""

    module: str
    pids: list[int]
    names: list[str]
    rss_kb: int
    pss_kb: int


def worker_trees(server_pid: int) -> list[WorkerTree]:
    """Return the worker process trees below the server, with their memory."""
    tree = children()
    found = []
    for top in tree.get(server_pid, []):
        pids = [top, *descendants(top, tree)]
        module = ""
        for pid in pids:
            argv = command_line(pid)
            if "--module-dir" in argv and argv[-1] != "--module-dir":
                module = Path(argv[argv.index("--module-dir") + 1]).parent.name
        if not module:
            continue  # not a worker (uv, for example)
        sizes = [memory_kb(pid) for pid in pids]
        names = [Path(command_line(pid)[0] or "?").name for pid in pids]
        found.append(
            WorkerTree(module, pids, names, sum(s[0] for s in sizes), sum(s[1] for s in sizes))
        )
    return found


# -- load --------------------------------------------------------------------------------------


@dataclass
class Sched:
    """CPU time and run-queue wait (runnable, waiting for a CPU) of some threads, in seconds,
    and how many times they were given a CPU (each is a wake-up or a preemption)."""

    cpu: float = 0.0
    wait: float = 0.0
    runs: int = 0

    def __sub__(self, other: Sched) -> Sched:
        return Sched(self.cpu - other.cpu, self.wait - other.wait, self.runs - other.runs)

    def __add__(self, other: Sched) -> Sched:
        return Sched(self.cpu + other.cpu, self.wait + other.wait, self.runs + other.runs)


def sched(pids: list[int]) -> Sched:
    """Return the summed /proc schedstat of every thread of `pids` (gone ones count 0)."""
    total = Sched()
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                cpu_ns, wait_ns, runs = (task / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            total += Sched(int(cpu_ns) / 1e9, int(wait_ns) / 1e9, int(runs))
    return total


def parties(server_pid: int) -> dict[str, Sched]:
    """Return the schedstat of the server, of all its workers, and of this client."""
    tree = children()
    return {
        "server": sched([server_pid]),
        "worker": sched(list(descendants(server_pid, tree))),
        "client": sched([os.getpid()]),
    }


@dataclass
class Target:
    """One measured request: a label, a path, whether it sends the token, the status expected."""

    label: str
    path: str
    auth: bool
    status: int = 200


@dataclass
class Tally:
    """What one target did under one load, summed over the rounds."""

    target: Target
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    used: dict[str, Sched] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        """Return completed requests per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def per_request_ms(self, party: str, what: str) -> float:
        """Return a party's CPU time or run-queue wait in milliseconds per request."""
        value = getattr(self.used.get(party, Sched()), what)
        return 1000 * float(value) / max(len(self.latencies_ms), 1)

    def runs_per_request(self, party: str) -> float:
        """Return how many times a party's threads were given a CPU, per request."""
        return self.used.get(party, Sched()).runs / max(len(self.latencies_ms), 1)

    def percentile(self, q: float) -> float:
        """Return the q-th percentile latency in milliseconds (nearest rank)."""
        return percentile(self.latencies_ms, q)

    @property
    def mean_ms(self) -> float:
        """Return the mean latency in milliseconds."""
        return sum(self.latencies_ms) / max(len(self.latencies_ms), 1)

    @property
    def waits_ms(self) -> float:
        """Return the run-queue wait of server, workers and client, per request."""
        return sum(self.per_request_ms(p, "wait") for p in ("server", "worker", "client"))


async def run_round(
    url: str, token: str, tally: Tally, seconds: float, warmup: float, server_pid: int
) -> None:
    """Send the tally's target from its clients for `seconds` after `warmup`; add to it."""
    clients = tally.clients
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"} if tally.target.auth else {}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        measuring = False

        async def one_client(until: float) -> None:
            while time.perf_counter() < until:
                start = time.perf_counter()
                response = await client.get(tally.target.path)
                elapsed = (time.perf_counter() - start) * 1000
                if not measuring:
                    continue
                if response.status_code != tally.target.status:
                    tally.errors += 1
                else:
                    tally.latencies_ms.append(elapsed)

        warm = time.perf_counter() + warmup
        await asyncio.gather(*(one_client(warm) for _ in range(clients)))
        measuring = True
        before = parties(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(one_client(started + seconds) for _ in range(clients)))
        tally.seconds += time.perf_counter() - started
        after = parties(server_pid)
        for party, value in after.items():
            tally.used[party] = tally.used.get(party, Sched()) + (value - before[party])


async def measure_interleaved(
    url: str,
    token: str,
    targets: list[Target],
    clients: int,
    seconds: float,
    rounds: int,
    server_pid: int,
) -> list[Tally]:
    """Measure each target for `seconds` in all, in `rounds` rounds taking turns."""
    tallies = [Tally(target, clients) for target in targets]
    for round_ in range(rounds):
        for tally in tallies:
            warmup = 1.0 if round_ == 0 else 0.3
            await run_round(url, token, tally, seconds / rounds, warmup, server_pid)
    return tallies


# -- profile -----------------------------------------------------------------------------------

# A sample whose innermost frame is one of these is a thread waiting, not working.
WAITING = frozenset(
    {
        "EpollSelector.select",
        "read_frame",  # the worker's main thread, blocked reading the pipe
        "_worker",  # a ThreadPoolExecutor thread waiting for work
        "Condition.wait",
        "Event.wait",
        "Queue.get",
        "Thread.join",
        "_wait_for_tstate_lock",
        "Future.result",
        "ThreadedChildWatcher._do_waitpid",  # asyncio's thread that waits for a worker to exit
    }
)
# Where a working sample is: the first of these found from the innermost frame outwards.
COMPONENTS = {
    "server": [
        ("AuthService.authenticate", "authentication (token, user and role reads)"),
        ("ModuleConfigs.config_for_code", "module config read"),
        ("WorkerPool.call", "worker pool: send the request, await the answer"),
        ("WorkerPool._read_answers", "worker pool: read and decode answers"),
        ("to_response (routes/dispatch.py)", "dispatcher: build the HTTP response"),
        ("module_segments", "dispatcher: match the route"),
        ("ModuleDispatcher.", "dispatcher: the rest"),
        ("get_manifest_schema", "native route: the schema endpoint"),
        ("serialize_response", "FastAPI: serialise the answer"),
        ("RequestResponseCycle", "ASGI stack: FastAPI, Starlette, middleware"),
        ("H11Protocol", "HTTP: uvicorn reading and writing requests"),
        ("HttpToolsProtocol", "HTTP: uvicorn reading and writing requests"),
    ],
    "worker": [
        ("handler (handlers/ping.py)", "the handler itself"),
        ("load_handler", "finding the handler (load_handler)"),
        ("write_frame", "answer: encode and write the frame"),
        ("to_response", "building the Response"),
        ("Worker._run", "building the Request, the rest of _run"),
        ("Worker.handle", "handle: the rest"),
        ("read_frame", "request: read and decode the frame"),
        ("ThreadPoolExecutor.submit", "handing the request to a thread"),
    ],
}


def py_spy() -> str | None:
    """Return the py-spy binary of this venv or of PATH, if there is one."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """Return `function (package/file.py)` for a py-spy frame `function (path:line)`."""
    found = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if found is None:
        return frame
    function, path = found.groups()
    return f"{function} ({'/'.join(Path(path).parts[-2:])})"


def component(process: str, names: list[str]) -> str:
    """Return the component a working sample with these frames (outermost first) is in."""
    for name in reversed(names):
        for marker, label in COMPONENTS.get(process, []):
            if marker in name:
                return label
    return "other (event loop, threads, interpreter)"


def summarize_profile(raw: Path) -> None:
    """Print, per process, the share of its working samples in each component."""
    working: collections.Counter[str] = collections.Counter()
    waiting: collections.Counter[str] = collections.Counter()
    parts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        process_at = max(i for i, f in enumerate(frames) if f.startswith("process "))
        argv = frames[process_at]
        process = "worker" if "modhub_worker" in argv else "server"
        names = [frame_name(f) for f in frames[process_at + 1 :]]
        count = int(count_text)
        if not names or names[-1].split(" (")[0] in WAITING:
            waiting[process] += count
            continue
        working[process] += count
        parts[process][component(process, names)] += count
        leaves[process][names[-1]] += count
    for process in ("server", "worker"):
        total = working[process]
        if not total:
            continue
        print(f"-- {process}: {total} working samples ({waiting[process]} waiting, left out)")
        for label, count in parts[process].most_common():
            print(f"   {count / total:6.1%}  {label}")
        print("   innermost frames:")
        for name, count in leaves[process].most_common(8):
            print(f"   {count / total:6.1%}  {name}")


async def profile_module_route(
    url: str, token: str, target: Target, clients: int, seconds: float, server_pid: int
) -> None:
    """Load `target` while py-spy samples the server and its workers; print the summary."""
    spy = py_spy()
    if spy is None:
        print("\n== profile: py-spy is not installed (.venv/bin/pip install py-spy)")
        return
    with tempfile.TemporaryDirectory(prefix="modhub-bench-spy-") as folder:
        raw = Path(folder) / "profile.txt"
        recorder = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(server_pid),
                "--subprocesses",
                "--rate",
                "500",
                "--duration",
                str(int(seconds + 2)),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        tally = Tally(target, clients)
        await run_round(url, token, tally, seconds, 1.0, server_pid)
        _, errors = await asyncio.to_thread(recorder.communicate)
        print(
            f"\n== profile: {target.label}, {clients} clients, under py-spy: "
            f"{tally.rps:,.0f} req/s, p50 {tally.percentile(50):.2f} ms"
        )
        if recorder.returncode != 0 or not raw.exists():
            print(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
            return
        summarize_profile(raw)


# -- report ------------------------------------------------------------------------------------


def machine() -> list[str]:
    """Return lines describing this machine and the software measured."""
    commit, dirty = git_commit()
    bwrap = shutil.which("bwrap")
    return [
        f"date: {utc_now()}",
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load {load_average(1)} at start",
        f"python: {python_build()}; {library_versions('fastapi', 'uvicorn', 'httpx')}",
        f"isolation: {isolation()}{f' ({bwrap})' if bwrap else ''}; running as uid {os.getuid()}",
        f"commit: {commit or '?'}{' plus a modified working tree' if dirty else ''}",
    ]


def print_table(tallies: list[Tally]) -> None:
    """Print one row per target: rate, latency, and per request the CPU time, the time
    waiting for a CPU and the number of times given one, of server, workers and client."""
    print(f"{'':76}per request: cpu ms / waiting-for-a-cpu ms / runs")
    print(
        f"{'target':44} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'mean':>6}  "
        f"{'server':>18} {'workers':>18} {'client':>18} {'errors':>6}"
    )
    for t in tallies:
        usage = "".join(
            f"{t.per_request_ms(p, 'cpu'):>7.2f}/{t.per_request_ms(p, 'wait'):>5.1f}/"
            f"{t.runs_per_request(p):>4.1f}"
            for p in ("server", "worker", "client")
        )
        print(
            f"{t.target.label:44} {t.rps:>6,.0f} {t.percentile(50):>7.2f} "
            f"{t.percentile(99):>7.2f} {t.mean_ms:>6.1f} {usage} {t.errors:>6}"
        )


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients (8-16)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per target")
    parser.add_argument("--serial-seconds", type=float, default=3.0, help="seconds, one client")
    parser.add_argument("--rounds", type=int, default=5, help="rounds the targets take turns in")
    parser.add_argument("--idle-modules", type=int, default=10, help="modules for cold/idle")
    parser.add_argument("--profile", action="store_true", help="also profile with py-spy")
    args = parser.parse_args()

    for line in machine():
        print(line)
    with tempfile.TemporaryDirectory(prefix="modhub-bench-routes-") as folder:
        tmp = Path(folder)
        sources = tmp / "sources"
        modules = [write_module(sources, MODULE)]
        idle = [f"bench-idle-{i:02d}" for i in range(args.idle_modules)]
        modules += [write_module(sources, name) for name in idle]
        # idle workers stay for the memory figure
        server, url = start_server(tmp / "data", {"MODHUB_WORKER_IDLE_SECONDS": "3600"})
        try:
            token = login(url)
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
            ) as client:
                started = time.perf_counter()
                for source in modules:
                    install(client, source, tmp)
                took = time.perf_counter() - started
                print(f"installed and enabled {len(modules)} modules in {took:.1f} s")
                ping = client.get(f"/api/v1/m/{MODULE}/ping")
                assert ping.status_code == 200, ping.text
                assert ping.json() == {"ok": True}, ping.text
                nope = client.get(f"/api/v1/m/{MODULE}/nope")
                assert nope.status_code == 404, nope.text
            asyncio.run(measure(url, token, server.pid, idle, args))
        finally:
            stop_server(server)


async def measure(
    url: str, token: str, server_pid: int, idle: list[str], args: argparse.Namespace
) -> None:
    """Run the loads, the cold starts and the memory census; print everything."""
    native = Target("GET /api/v1/schemas/manifest (native)", "/api/v1/schemas/manifest", True)
    health = Target("GET /healthz (native, no auth)", "/healthz", False)
    dispatch_404 = Target(
        f"GET /api/v1/m/{MODULE}/nope (dispatcher 404)", f"/api/v1/m/{MODULE}/nope", True, 404
    )
    module = Target(f"GET /api/v1/m/{MODULE}/ping (module)", f"/api/v1/m/{MODULE}/ping", True)
    targets = [native, health, dispatch_404, module]

    rounds = max(1, args.rounds)
    print(
        f"\n== under load: {args.clients} clients, {args.seconds:g} s per target "
        f"in {rounds} interleaved rounds"
    )
    loaded = await measure_interleaved(
        url, token, targets, args.clients, args.seconds, rounds, server_pid
    )
    print_table(loaded)
    print(f"\n== one client: {args.serial_seconds:g} s per target in {rounds} interleaved rounds")
    serial = await measure_interleaved(
        url, token, targets, 1, args.serial_seconds, rounds, server_pid
    )
    print_table(serial)

    share = loaded[3].rps / loaded[0].rps
    added_serial = serial[3].percentile(50) - serial[0].percentile(50)
    added_loaded = loaded[3].percentile(50) - loaded[0].percentile(50)
    hop = serial[3].percentile(50) - serial[2].percentile(50)
    print("\n== targets (module route against the native authenticated route)")
    print(
        f"added p50, one client:   {added_serial:+.2f} ms (target <= {ADDED_P50_TARGET_MS:g} ms)"
        f"  {verdict(added_serial <= ADDED_P50_TARGET_MS)}"
    )
    print(
        f"throughput share:        {share:.0%} of {loaded[0].rps:,.0f} req/s "
        f"(target >= {THROUGHPUT_SHARE_TARGET:.0%})  {verdict(share >= THROUGHPUT_SHARE_TARGET)}"
    )
    print(f"added p50, {args.clients} clients:  {added_loaded:+.2f} ms (queueing included)")
    cpu = [t.per_request_ms("server", "cpu") + t.per_request_ms("worker", "cpu") for t in serial]
    print(
        f"CPU per request, server + worker, one client: module {cpu[3]:.2f} ms, native "
        f"{cpu[0]:.2f} ms ({cpu[3] - cpu[0]:+.2f} ms), dispatcher 404 {cpu[2]:.2f} ms"
    )
    print(
        f"module route minus the dispatcher's own 404 (config read + worker round trip), "
        f"one client: {hop:+.2f} ms at p50"
    )

    print(f"\n== cold workers: first request to {len(idle)} modules never called before")
    firsts: list[float] = []
    seconds_: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        await client.get("/healthz")  # the connection is open before the clock starts
        for name in idle:
            for bucket in (firsts, seconds_):
                start = time.perf_counter()
                response = await client.get(f"/api/v1/m/{name}/ping")
                bucket.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.text
    firsts.sort()
    seconds_.sort()
    print(
        f"first request:  median {firsts[len(firsts) // 2]:.1f} ms, "
        f"min {firsts[0]:.1f} ms, max {firsts[-1]:.1f} ms"
    )
    print(
        f"second request: median {seconds_[len(seconds_) // 2]:.2f} ms, "
        f"min {seconds_[0]:.2f} ms, max {seconds_[-1]:.2f} ms"
    )

    await asyncio.sleep(1.0)
    trees = [t for t in worker_trees(server_pid) if t.module in idle]
    print(f"\n== memory of {len(trees)} idle workers (process tree of each, from /proc)")
    if trees:
        rss = sorted(t.rss_kb for t in trees)
        pss = sorted(t.pss_kb for t in trees)
        print(f"each worker is: {' > '.join(trees[0].names)}")
        print(
            f"RSS per worker: median {rss[len(rss) // 2] / 1024:.1f} MiB "
            f"(min {rss[0] / 1024:.1f}, max {rss[-1] / 1024:.1f}); "
            f"all {len(trees)}: {sum(rss) / 1024:.1f} MiB"
        )
        print(
            f"PSS per worker: median {pss[len(pss) // 2] / 1024:.1f} MiB "
            f"(shared pages split between the processes that map them); "
            f"all {len(trees)}: {sum(pss) / 1024:.1f} MiB"
        )
        one = ", ".join(
            f"{name} {memory_kb(pid)[0] / 1024:.1f} MiB"
            for pid, name in zip(trees[0].pids, trees[0].names, strict=True)
        )
        print(f"RSS of one tree by process: {one}")
    server_rss, server_pss = memory_kb(server_pid)
    print(f"server process: RSS {server_rss / 1024:.1f} MiB, PSS {server_pss / 1024:.1f} MiB")
    if args.profile:
        await profile_module_route(url, token, module, args.clients, args.seconds, server_pid)
    print(f"\nload average at the end: {load_average(1)}")


if __name__ == "__main__":
    main()
