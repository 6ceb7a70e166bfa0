"""Sandbox fixtures: one module environment per session, module code laid out as in a data
dir, a worker pool run on its own event loop, and a look at the processes of a module uid.

Module code comes from `tests/sandbox/modules/<source>` and is copied to
`<data_dir>/modules/<name>/<version>`, the layout of installed modules, so that the
isolation tests can put the platform's own files (key, database) beside it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modhub.lifecycle.environment import PackageIndex, create_env
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool, isolation

MODULES = Path(__file__).parent / "modules"
ATTACKS = "handlers/attacks.py"
PROBE = "handlers/probe.py"
T = TypeVar("T")


@pytest.fixture(scope="session")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return an empty module environment (no requirements), made once per session."""
    root = tmp_path_factory.mktemp("sandbox-env")
    env = root / "env"
    create_env(env, [], index=PackageIndex(offline=True), cache_dir=root / "uv-cache")
    return env


@dataclass
class Sandbox:
    """A data dir with module code in it, and the environment every module uses."""

    data_dir: Path
    env: Path

    def code(self, name: str, version: str = "1.0.0", source: str = "hostile") -> Path:
        """Copy `modules/<source>` to `<data_dir>/modules/<name>/<version>` (once)."""
        folder = self.data_dir / "modules" / name / version
        if not folder.exists():
            shutil.copytree(MODULES / source, folder)
        return folder

    def runtime(
        self, name: str, version: str = "1.0.0", source: str = "hostile", **limits: Any
    ) -> ModuleRuntime:
        """Return the runtime of module `name` at `version` with code from `source`."""
        return ModuleRuntime(
            name=name,
            version=version,
            code=self.code(name, version, source),
            env=self.env,
            **limits,
        )


@pytest.fixture
def sandbox(tmp_path: Path, module_env: Path) -> Sandbox:
    """Return an empty data dir using the session's module environment."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Sandbox(data_dir, module_env)


def unique(prefix: str) -> str:
    """Return a module name nobody else uses (so its uid is its own, even under xdist)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def with_pool(
    sandbox: Sandbox,
    body: Callable[[WorkerPool], Awaitable[T]],
    limits: PoolLimits | None = None,
) -> T:
    """Run `body(pool)` on a new event loop with a new pool, and stop every worker after."""

    async def main() -> T:
        pool = WorkerPool(sandbox.data_dir, limits or PoolLimits(backoff_base=0.3))
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def payload(
    method: str = "GET",
    path: str = "/",
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return a route payload as the dispatcher builds it."""
    raw = b"" if body is None else json.dumps(body).encode()
    return {
        "method": method,
        "path": path,
        "pathParams": params or {},
        "query": {key: [value] for key, value in (query or {}).items()},
        "headers": {"accept": "application/json"},
        "body": base64.b64encode(raw).decode(),
        "user": {"username": "ada", "role": "admin", "permissions": ["*"]},
        "requestId": str(uuid.uuid4()),
    }


async def route(
    pool: WorkerPool,
    runtime: ModuleRuntime,
    handler: str,
    *,
    config: dict[str, Any] | None = None,
    **request: Any,
) -> dict[str, Any]:
    """Call a route handler (`file.py:function`) through the pool and return its answer."""
    return await pool.call(runtime, "route", handler, payload(**request), config or {})


async def answer_json(
    pool: WorkerPool, runtime: ModuleRuntime, handler: str, **request: Any
) -> Any:
    """Call a route handler and return its body parsed as JSON (status 200 expected)."""
    answer = await route(pool, runtime, handler, **request)
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 15, what: str = "a condition"
) -> T:
    """Return the first result of `check` that does not raise and is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from error
        await asyncio.sleep(0.05)


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10, what: str = "a condition"
) -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def processes_of(uid: int) -> list[int]:
    """Return the pids of every process whose real uid is `uid` (what `ps -u uid` shows)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Return whether a process `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def uses_bubblewrap() -> bool:
    """Return whether workers started now get bubblewrap's namespaces."""
    return isolation() == "bubblewrap"


def fork_bomb_contained() -> bool:
    """A fork bomb is bounded by RLIMIT_NPROC only for a uid of its own: under bubblewrap
    the worker drops to the module's uid; without it, as root, the limit does not apply."""
    return uses_bubblewrap() and os.getuid() == 0
