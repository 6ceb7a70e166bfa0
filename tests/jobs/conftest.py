"""Job fixtures: modules with job handlers installed as bundles, runners on a fake clock.

Every test that touches a database runs on SQLite and on PostgreSQL (`database_url`). The
PostgreSQL database is made once per session (per xdist worker) and emptied before each
test, as in tests/lifecycle, instead of a CREATE/DROP DATABASE per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from modhub.auth import credentials
from modhub.db import Database
from modhub.db.models import JobRun
from modhub.jobs import JobLimits, JobRunner
from modhub.registry import Status
from modhub.sandbox import PoolLimits, WorkerPool
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import (
    PASSWORD,
    SECRET,
    LiveServer,
    emptied,
    free_port,
    session_database,
)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "modules"
ACTOR = "tester"

# A winter Wednesday, on a minute boundary: fake clocks start here. It is in the past, so
# the hourly prune in `tick` (which compares with the real `created_at`) deletes nothing.
T0 = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)

# Job handlers used by the tests (module-level state survives between calls to one worker).
HANDLERS = {
    "jobs/ok.py": (
        "def handler(context):\n"
        "    context.logger.info('ran %s attempt %s', context.job, context.attempt)\n"
        "    return {\n"
        "        'job': context.job,\n"
        "        'scheduled': context.scheduled_time.isoformat(),\n"
        "        'attempt': context.attempt,\n"
        "        'runId': context.run_id,\n"
        "        'config': context.config,\n"
        "    }\n"
    ),
    "jobs/boom.py": "def handler(context):\n    raise RuntimeError('boom on purpose')\n",
    "jobs/slow.py": (
        "import time\n\n\ndef handler(context):\n"
        "    time.sleep(float(context.config.get('sleep', 5)))\n"
        "    return {'slept': True}\n"
    ),
    "jobs/flaky.py": (
        "CALLS = {'n': 0}\n\n\ndef handler(context):\n"
        "    CALLS['n'] += 1\n"
        "    if CALLS['n'] <= 2:\n"
        "        raise RuntimeError(f\"flaky failure {CALLS['n']}\")\n"
        "    return {'calls': CALLS['n'], 'attempt': context.attempt}\n"
    ),
    "jobs/chatty.py": (
        "def handler(context):\n"
        "    for i in range(250):\n"
        "        context.logger.info('chatty run %s line %s', context.run_id, i)\n"
        "    return {'lines': 250}\n"
    ),
    "jobs/nap.py": (
        "import time\n\n\ndef handler(context):\n"
        "    started = time.time()\n"
        "    time.sleep(0.4)\n"
        "    return {'started': started, 'ended': time.time()}\n"
    ),
}


@pytest.fixture(scope="session")
def jobs_database() -> Iterator[tuple[str, list[str]]]:
    """Yield this session's PostgreSQL database and the tables its tests write."""
    with session_database("modhub_jobs") as database:
        yield database


@pytest.fixture
def postgres_url(jobs_database: tuple[str, list[str]]) -> str:
    """Return the session's PostgreSQL database, emptied as a fresh migration leaves it."""
    return emptied(jobs_database)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords at argon2's lowest cost (the `tokens` fixture logs in three users)."""
    monkeypatch.setattr(
        credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """Return settings that install module environments offline (modules need no packages)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "secret_key": SECRET,
        "admin_password": PASSWORD,
        "pip_offline": True,
        "operation_wait_seconds": 120,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Return settings with a temporary data dir on the test database."""
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """Return a folder to write module sources into."""
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder


def unique(prefix: str = "jobs") -> str:
    """Return a module name nobody else uses (its worker's uid is its own under xdist)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def job(name: str, handler: str = "jobs/ok.py", **fields: Any) -> dict[str, Any]:
    """Return one manifest job."""
    return {"name": name, "handler": handler, **fields}


def write_module(
    root: Path,
    name: str,
    jobs: list[dict[str, Any]],
    version: str = "1.0.0",
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a module folder with these jobs and every handler of HANDLERS."""
    folder = root / f"{name}-{version}"
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "displayName": f"{name} {version}",
        "capabilities": {"jobs": {"handlers": jobs}},
    }
    if config:
        data["config"] = {"schema": config}
    for path, text in HANDLERS.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (folder / "module.json").write_text(json.dumps(data, indent=2))
    return folder


def install(
    services: Services,
    sources: Path,
    name: str,
    jobs: list[dict[str, Any]],
    *,
    version: str = "1.0.0",
    enable: bool = True,
    config: dict[str, Any] | None = None,
) -> str:
    """Add the module as a bundle and (by default) install and enable it; return its name."""
    services.lifecycle.add_bundle(write_module(sources, name, jobs, version, config), actor=ACTOR)
    if enable:
        set_status(services, name, Status.ENABLED)
    return name


def set_status(services: Services, name: str, status: Status) -> None:
    """Enable or disable a module and wait for the operation."""
    done, _, op = services.lifecycle.set_status(name, status, actor=ACTOR)
    assert done, f"operation {op} did not finish"
    assert services.registry.get(name).status == status


class FakeClock:
    """A clock the test moves: `clock()` returns `clock.now`."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return moment

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Rig:
    """A runner on a fake clock over the test's services, with its own worker pool."""

    services: Services
    runner: JobRunner
    clock: FakeClock
    pool: WorkerPool
    extra: list[JobRunner] = field(default_factory=list)

    async def tick(self, moment: datetime | None = None) -> None:
        """Move the clock (if given) and tick once."""
        if moment is not None:
            self.clock.set(moment)
        await self.runner.tick(self.clock())

    def runs(self, **where: Any) -> list[JobRun]:
        """Return run rows, oldest first, filtered by column values."""
        return rows(self.services.db, **where)


def rows(db: Database, **where: Any) -> list[JobRun]:
    """Return job run rows, oldest first, filtered by column values."""
    query = select(JobRun).order_by(JobRun.id)
    for column, value in where.items():
        query = query.where(getattr(JobRun, column) == value)
    with db.read() as session:
        return list(session.scalars(query))


def make_runner(
    services: Services,
    pool: WorkerPool,
    clock: Callable[[], datetime],
    **limits: Any,
) -> JobRunner:
    """Return a JobRunner over `services` with this pool, clock and limits."""
    return JobRunner(
        services.registry, pool, services.jobs.runtime_for, JobLimits(**limits), clock=clock
    )


def with_rig(
    services: Services,
    body: Callable[[Rig], Awaitable[T]],
    start: datetime = T0,
    **limits: Any,
) -> T:
    """Run `body(rig)` on a new event loop; stop every worker after."""

    async def main() -> T:
        pool = WorkerPool(services.settings.data_dir, PoolLimits(backoff_base=0.05))
        clock = FakeClock(start)
        rig = Rig(services, make_runner(services, pool, clock, **limits), clock, pool)
        try:
            return await body(rig)
        finally:
            for runner in (rig.runner, *rig.extra):
                for task in list(runner.tasks.values()):
                    task.cancel()
                with contextlib.suppress(TimeoutError):  # a wedged run fails, not hangs
                    await asyncio.wait_for(runner.drain(), 30)
            await pool.close()

    return asyncio.run(main())


async def until(
    check: Callable[[], Any], timeout: float = 20, what: str = "a condition", step: float = 0.02
) -> Any:
    """Return the first truthy `check()`, polling on the event loop for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "a condition") -> Any:
    """Return the first truthy `check()`, polling for `timeout` seconds (no event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# -- a real server with the examples -------------------------------------------------------


def start_example_server(tmp_path: Path, database_url: str) -> LiveServer:
    """Start `python -m modhub serve --examples examples/modules` (as `make run` does)."""
    if not database_url.startswith("sqlite"):
        from modhub.db import upgrade

        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    port = free_port()
    data_dir = tmp_path / "server-data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(data_dir),
            "MODHUB_SECRET_KEY": SECRET,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
            "MODHUB_DATABASE_URL": database_url,
            "MODHUB_PIP_OFFLINE": "true",
        }
    )
    log = tmp_path / f"serve-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port), "--examples", str(EXAMPLES)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"modhub serve exited: {server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"modhub serve did not answer in 120 s: {server.output()}")
