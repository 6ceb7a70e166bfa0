"""Measure TypeScript modules: route latency beside Python, Node worker cold start, install.

Run with `.venv/bin/python bench/typescript.py [--requests N] [--rounds R] [--starts S]
[--installs I]`. The issue-15 figures of bench/routes.py and bench/lifecycle.py, kept in a
script of their own (both are already long):

1. Route latency: `python -m modhub serve` on a temporary SQLite data dir with two modules
   whose `GET /ping` returns `{"ok": true}`: `bench-py` (handlers/ping.py) and `bench-ts`
   (handlers/ping.ts, the Node worker). One client, keep-alive, requests back to back;
   the two routes take turns in `--rounds` rounds of `--requests` each, so that a machine
   getting busier affects both alike. Target: the TypeScript route's p50 within 0.5 ms of
   the Python route's.
2. Node worker cold start: in this process, a WorkerPool (bubblewrap where installed, the
   module's uid, its control group) starts a fresh Node worker and answers its first
   request: from the call to the answer, `--starts` times (a new module each time).
   Target: under 150 ms at p50. The Python worker's cold start is printed beside it.
3. Install: the environment of a TypeScript module made as an install makes it (uv venv,
   then the esbuild compile of its handlers, then sealed): (a) no npm dependencies,
   target under 1 s; (b) one small npm package from the module's npm cache
   (`MODHUB_NPM_OFFLINE=1`, `npm ci` in the install sandbox), target under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common import (
    cpu_model,
    git_commit,
    install,
    load_average,
    login,
    percentile,
    start_server,
    stop_server,
    utc_now,
    verdict,
)
from modhub.lifecycle import typescript
from modhub.lifecycle.environment import PackageIndex, create_env
from modhub.manifest import Manifest
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool, isolation

ADDED_P50_TARGET_MS = 0.5
COLD_START_TARGET_MS = 150.0
INSTALL_TARGET_S = 1.0
INSTALL_WITH_DEP_TARGET_S = 5.0
PY = '"""GET /ping: trivial work."""\n\n\ndef handler(request):\n    return {"ok": True}\n'
TS = "export async function handler(request: unknown) {\n  return { ok: true };\n}\n"


def write_module(folder: Path, name: str, handler: str, text: str, **extra: object) -> Path:
    """Write module `name` with one route, GET /ping, answered by `handler`."""
    root = folder / name
    (root / handler).parent.mkdir(parents=True)
    (root / handler).write_text(text)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "displayName": f"Bench {name}",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": handler}]}
        },
        **extra,
    }
    (root / "module.json").write_text(json.dumps(manifest, indent=2))
    return root


# -- 1. route latency ----------------------------------------------------------------------------


def route_latency(tmp: Path, requests: int, rounds: int) -> dict[str, list[float]]:
    """Return the latencies (ms) of GET /ping of the Python and the TypeScript module."""
    modules = tmp / "modules"
    py = write_module(modules, "bench-py", "handlers/ping.py", PY)
    ts = write_module(modules, "bench-ts", "handlers/ping.ts", TS)
    process, url = start_server(tmp / "data")
    try:
        headers = {"authorization": f"Bearer {login(url)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for folder in (py, ts):
                install(client, folder, tmp)
            times: dict[str, list[float]] = {"python": [], "typescript": []}
            targets = {"python": "/api/v1/m/bench-py/ping", "typescript": "/api/v1/m/bench-ts/ping"}
            for path in targets.values():  # warm: workers started, handlers imported
                for _ in range(50):
                    client.get(path).raise_for_status()
            for _ in range(rounds):
                for label, path in targets.items():
                    for _ in range(requests):
                        started = time.perf_counter()
                        answer = client.get(path)
                        times[label].append((time.perf_counter() - started) * 1000)
                        if answer.status_code != 200:
                            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text}")
            return times
    finally:
        stop_server(process)


# -- 2. cold start -------------------------------------------------------------------------------


def cold_starts(tmp: Path, starts: int) -> dict[str, list[float]]:
    """Return the cold-start times (ms) of Node and Python workers: call to first answer."""
    code = write_module(tmp / "cold", "cold", "handlers/ping.ts", TS)
    (code / "handlers" / "ping.py").write_text(PY)
    env = tmp / "cold-env"
    manifest = Manifest.model_validate(json.loads((code / "module.json").read_text()))
    create_env(
        env,
        [],
        index=PackageIndex(offline=True),
        cache_dir=tmp / "uv-cache",
        finish=lambda path: typescript.build(
            manifest, code, path, owner_uid=0, cache_dir=tmp / "npm", log=lambda line: None
        ),
    )
    payload = {
        "method": "GET",
        "path": "/ping",
        "pathParams": {},
        "query": {},
        "headers": {},
        "body": base64.b64encode(b"").decode(),
        "user": {"username": "ada", "role": "admin", "permissions": ["*"]},
        "requestId": "bench",
    }

    async def measure() -> dict[str, list[float]]:
        pool = WorkerPool(tmp / "pool-data", PoolLimits())
        found: dict[str, list[float]] = {"node": [], "python": []}
        try:
            for _ in range(starts):
                for label, handler in (
                    ("node", "handlers/ping.ts"),
                    ("python", "handlers/ping.py"),
                ):
                    runtime = ModuleRuntime(
                        name=f"cold-{uuid.uuid4().hex[:8]}", version="1.0.0", code=code, env=env
                    )
                    started = time.perf_counter()
                    await pool.call(runtime, "route", handler, payload, {})
                    found[label].append((time.perf_counter() - started) * 1000)
                    await pool.stop_module(runtime.name)
        finally:
            await pool.close()
        return found

    return asyncio.run(measure())


# -- 3. install ----------------------------------------------------------------------------------


def installs(tmp: Path, count: int) -> dict[str, list[float]]:
    """Return the times (s) to make a TypeScript module's environment, without and with one
    npm dependency from the module's npm cache."""
    package = tmp / "tiny"
    package.mkdir(parents=True)
    (package / "package.json").write_text(
        json.dumps(
            {"name": "modhub-tiny", "version": "1.0.0", "type": "module", "main": "index.js"}
        )
    )
    (package / "index.js").write_text("export const shout = (s) => s.toUpperCase() + '!';\n")
    packed = json.loads(
        subprocess.run(
            ["npm", "pack", "--json", "--pack-destination", str(tmp)],
            cwd=package,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )[0]
    cache = tmp / "npm-cache"
    subprocess.run(
        ["npm", "cache", "add", str(tmp / packed["filename"]), "--cache", str(cache)],
        check=True,
        capture_output=True,
    )
    lock = {
        "name": "bench-dep",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": {"name": "bench-dep", "version": "1.0.0", "dependencies": {"modhub-tiny": "1.0.0"}},
            "node_modules/modhub-tiny": {
                "version": "1.0.0",
                "resolved": "https://registry.npmjs.org/modhub-tiny/-/modhub-tiny-1.0.0.tgz",
                "integrity": packed["integrity"],
            },
        },
    }
    plain = write_module(tmp / "install", "bench-plain", "handlers/ping.ts", TS)
    with_dep = write_module(
        tmp / "install",
        "bench-dep",
        "handlers/ping.ts",
        "import { shout } from 'modhub-tiny';\nexport const handler = () => shout('ok');\n",
    )
    (with_dep / "package.json").write_text(json.dumps(lock["packages"][""]))
    (with_dep / "package-lock.json").write_text(json.dumps(lock))
    os.environ["MODHUB_NPM_OFFLINE"] = "1"
    found: dict[str, list[float]] = {"no npm dependency": [], "one npm dependency (cache)": []}
    for run in range(count):
        for label, code in zip(found, (plain, with_dep), strict=True):
            manifest = Manifest.model_validate(json.loads((code / "module.json").read_text()))
            env = tmp / "envs" / f"{code.name}-{run}"
            started = time.perf_counter()
            create_env(
                env,
                [],
                index=PackageIndex(offline=True),
                cache_dir=tmp / "uv-cache" / code.name,
                owner=code.name,
                finish=lambda path, m=manifest, c=code: typescript.build(
                    m, c, path, owner_uid=_uid(c.name), cache_dir=cache, log=lambda line: None
                ),
            )
            found[label].append(time.perf_counter() - started)
    return found


def _uid(name: str) -> int:
    from modhub.sandbox.launch import module_uid

    return module_uid(name) if os.getuid() == 0 else os.getuid()


# -- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--installs", type=int, default=5)
    args = parser.parse_args()
    commit, dirty = git_commit()
    print(f"# bench/typescript.py, {utc_now()}, commit {commit}{' (dirty)' if dirty else ''}")
    print(f"# {cpu_model()}, load {load_average()}, isolation {isolation()}, node {_node()}")
    with tempfile.TemporaryDirectory(prefix="bench-ts-") as folder:
        tmp = Path(folder)
        latency = route_latency(tmp / "routes", args.requests, args.rounds)
        py50, ts50 = (percentile(latency[k], 50) for k in ("python", "typescript"))
        print("\n## Route latency, one client (ms)")
        print(f"{'route':<12} {'p50':>7} {'p90':>7} {'p99':>7}")
        for label, values in latency.items():
            p = [percentile(values, q) for q in (50, 90, 99)]
            print(f"{label:<12} {p[0]:7.2f} {p[1]:7.2f} {p[2]:7.2f}")
        added = ts50 - py50
        print(
            f"TypeScript p50 - Python p50: {added:+.2f} ms "
            f"(target <= {ADDED_P50_TARGET_MS} ms) {verdict(added <= ADDED_P50_TARGET_MS)}"
        )
        cold = cold_starts(tmp / "cold", args.starts)
        print("\n## Worker cold start: call to first answer (ms)")
        for label, values in cold.items():
            print(
                f"{label:<7} p50 {statistics.median(values):7.1f}  min {min(values):7.1f}  "
                f"max {max(values):7.1f}"
            )
        node50 = statistics.median(cold["node"])
        print(
            f"Node cold start p50 {node50:.1f} ms (target < {COLD_START_TARGET_MS:.0f} ms) "
            f"{verdict(node50 < COLD_START_TARGET_MS)}"
        )
        made = installs(tmp / "install", args.installs)
        print("\n## TypeScript module environment: uv venv + npm ci + esbuild (s)")
        for (label, values), target in zip(
            made.items(), (INSTALL_TARGET_S, INSTALL_WITH_DEP_TARGET_S), strict=True
        ):
            middle = statistics.median(values)
            print(
                f"{label:<28} p50 {middle:5.2f}  min {min(values):5.2f}  max {max(values):5.2f}"
                f"  (target < {target:g} s) {verdict(middle < target)}"
            )


def _node() -> str:
    found = shutil.which("node")
    if found is None:
        return "missing"
    return subprocess.run([found, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
