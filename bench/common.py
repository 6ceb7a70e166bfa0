"""Helpers shared by the benchmark scripts in this folder.

The scripts run as `.venv/bin/python bench/<name>.py`, which puts this folder first on
`sys.path`, so they `import common`. Only what two or more scripts do the same way lives
here: describing the machine and the software measured, the load average, PASS/MISS, a
latency percentile, reading /proc, a `modhub serve` on a free port, and a fresh
PostgreSQL database. Nothing here times anything; each script still measures and prints
its own figures.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The specification's example manifest (read as data; bench imports nothing from tests/).
VMWARE_FIXTURE = ROOT / "tests" / "manifest" / "fixtures" / "vmware-vcenter.json"
# The secret key and admin password of every data dir and server the scripts make.
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
PASSWORD = "bench password 123"
PG_ADMIN_URL = os.environ.get("MODHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- describing the run ------------------------------------------------------------------------


def utc_now() -> str:
    """Return the current time as `YYYY-MM-DD HH:MM UTC`."""
    return f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}"


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Return how many cores this process may run on (its CPU affinity where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def python_build() -> str:
    """Return the interpreter and the OS, e.g. `CPython 3.11.7 on Linux x86_64`."""
    return (
        f"{platform.python_implementation()} {platform.python_version()} "
        f"on {platform.system()} {platform.machine()}"
    )


def library_versions(*names: str) -> str:
    """Return `name version` of each installed distribution in `names`, comma-separated."""
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def software(*libraries: str) -> str:
    """Return `python X, SQLite Y, ` followed by the versions of `libraries`."""
    return (
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{library_versions(*libraries)}"
    )


def load_average(count: int = 3, digits: int = 1) -> str:
    """Return the first `count` of the 1-, 5- and 15-minute load averages, space-separated.

    Each has `digits` decimals; `n/a` where the system does not tell.
    """
    if not hasattr(os, "getloadavg"):
        return "n/a"
    try:
        return " ".join(f"{x:.{digits}f}" for x in os.getloadavg()[:count])
    except OSError:
        return "n/a"


def machine_summary() -> str:
    """Return the CPU model, usable cores, Python build and the 1-minute load, on one line."""
    return f"{cpu_model()}, {usable_cores()} cores, {python_build()}, load {load_average(1, 2)}"


def git_commit() -> tuple[str, bool]:
    """Return the checkout's short commit hash ("" if unknown) and whether tracked files
    differ from it (untracked files do not count), asking git without changing anything."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    return commit, bool(git("status", "--porcelain", "--untracked-files=no"))


# -- figures -----------------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    """Return `PASS` or `MISS`, as the scripts print whether a target was met."""
    return "PASS" if passed else "MISS"


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (q from 0 to 100) of `values`, by nearest rank.

    That is the value at rank round(q/100 * n) of the n sorted values, clamped to 1..n.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# -- /proc -------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str]:
    """Return the fields of /proc/<pid>/stat that follow the command name.

    The name stands in parentheses and may itself hold spaces and parentheses, so the line
    is split after its last `)`: index 0 is the state, 1 the parent pid, 11 and 12 utime
    and stime (fields 3, 4, 14 and 15 of proc(5)). Raises OSError if the process is gone.
    """
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


# -- a modhub server ---------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    wait: float = 120,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m modhub serve [args]` on `data_dir` and a free port; return the
    process and its URL once `/healthz` answers.

    The server gets `SECRET`, `PASSWORD` and `extra_env`, and none of this process's other
    MODHUB_ variables; it logs to `serve.log` beside `data_dir`.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(data_dir),
            "MODHUB_SECRET_KEY": SECRET,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
            **(extra_env or {}),
        }
    )
    log_path = data_dir.parent / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port), *args],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"modhub serve exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(
        f"modhub serve did not answer in {wait:.0f} s:\n{log_path.read_text()[-3000:]}"
    )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server (its workers die with it); kill it if it has not exited in 15 s."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def login(url: str) -> str:
    """Log in to the server at `url` as admin with `PASSWORD`; return the access token."""
    credentials = {"username": "admin", "password": PASSWORD}
    answer = httpx.post(url + "/api/v1/auth/login", json=credentials)
    token: str = answer.json()["accessToken"]
    return token


def install(client: httpx.Client, folder: Path, tmp: Path) -> dict[str, Any]:
    """Upload the module in `folder` as a bundle and enable it; return the module."""
    from modhub.lifecycle.bundle import pack_folder

    bundle = pack_folder(folder, tmp / f"{folder.name}.tar.gz")
    with bundle.open("rb") as stream:
        uploaded = client.post(
            "/api/v1/modules/bundles", files={"file": (bundle.name, stream, "application/gzip")}
        )
    uploaded.raise_for_status()
    answer = client.put(f"/api/v1/modules/{folder.name}/status", json={"status": "ENABLED"})
    answer.raise_for_status()
    if answer.status_code == 202:
        operation = answer.json()
        while operation["status"] == "running":
            time.sleep(0.2)
            operation = client.get(f"/api/v1/operations/{operation['id']}").json()
        if operation["status"] != "succeeded":
            raise SystemExit(f"enabling {folder.name} failed: {operation}")
    module: dict[str, Any] = client.get(f"/api/v1/modules/{folder.name}").json()
    if module["status"] != "ENABLED":
        raise SystemExit(f"{folder.name} is {module['status']}: {module}")
    return module


# -- a PostgreSQL database ---------------------------------------------------------------------


@contextmanager
def postgres_database(prefix: str) -> Iterator[str | None]:
    """Yield the URL of a fresh, migrated PostgreSQL database named `prefix`_<random> on
    the server of MODHUB_TEST_PG (None: none answers, said so); drop it after."""
    import psycopg

    from modhub.db import Database, upgrade

    admin = PG_ADMIN_URL.rsplit("/", 1)[0]
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
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
