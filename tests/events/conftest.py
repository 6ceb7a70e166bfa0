"""Event fixtures: an emitting module and subscribers installed with code, a dispatcher on a
fake clock with its own worker pool (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from modhub.auth import credentials
from modhub.db.models import EventDelivery
from modhub.events import Dispatcher, DispatchLimits
from modhub.registry import Status
from modhub.sandbox import PoolLimits, WorkerPool
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import emptied, session_database
from tests.jobs.conftest import FakeClock, make_settings, until

T = TypeVar("T")
ACTOR = "tester"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "vm": {"type": "string"}},
    "required": ["n"],
    "additionalProperties": False,
}
# The emitter's route emits what the request asks; it reports EventInvalid as 422.
EMIT_ROUTE = (
    "from modhub.sdk import EventInvalid, Response\n\n\n"
    "def handler(request):\n"
    "    body = request.json\n"
    "    try:\n"
    "        done = request.events.emit(body['name'], body.get('payload'))\n"
    "    except EventInvalid as exc:\n"
    "        return Response(status=422, json={'error': type(exc).__name__, 'message': str(exc)})\n"
    "    return {'id': done.id, 'seq': done.seq}\n"
)
# Subscriber handlers: record each delivery in the module's store (key by event id).
RECORD = (
    "def handler(event):\n"
    "    n = event.store.incr('count')\n"
    "    event.store.set(f'seen/{n:06d}', {'id': event.id, 'name': event.name,\n"
    "        'source': event.source, 'payload': event.payload, 'attempt': event.attempt,\n"
    "        'emittedAt': event.emitted_at.isoformat(), 'config': event.config})\n"
)
FAIL = (
    "def handler(event):\n"
    "    event.store.incr(f'tries/{event.id}')\n"
    "    raise RuntimeError('failing on purpose')\n"
)
# Fails its first two attempts of each event, then records it.
FLAKY = (
    "def handler(event):\n"
    "    tries = event.store.incr(f'tries/{event.id}')\n"
    "    if tries <= 2:\n"
    "        raise RuntimeError(f'flaky {tries}')\n"
    "    n = event.store.incr('count')\n"
    "    event.store.set(f'seen/{n:06d}', {'id': event.id, 'attempt': event.attempt})\n"
)

# Marks its start, then waits until the test sets the store's key `go` (a shutdown test
# stops the dispatcher while it waits), then records the event.
GATE = (
    "import time\n\n\n"
    "def handler(event):\n"
    "    event.store.set(f'started/{event.id}', event.attempt)\n"
    "    while event.store.get('go') is None:\n"
    "        time.sleep(0.01)\n"
    "    n = event.store.incr('count')\n"
    "    event.store.set(f'seen/{n:06d}', {'id': event.id, 'attempt': event.attempt})\n"
)


@pytest.fixture(scope="session")
def events_database() -> Iterator[tuple[str, list[str]]]:
    """Yield this session's PostgreSQL database and the tables its tests write."""
    with session_database("modhub_events") as database:
        yield database


@pytest.fixture
def postgres_url(events_database: tuple[str, list[str]]) -> str:
    """Return the session's PostgreSQL database, emptied as a fresh migration leaves it."""
    return emptied(events_database)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords at argon2's lowest cost."""
    monkeypatch.setattr(
        credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Return settings whose process neither schedules jobs nor dispatches on its own."""
    return make_settings(tmp_path / "data", database_url, scheduler=False, event_dispatch=False)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder


def unique(prefix: str) -> str:
    """Return a module name nobody else uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_module(root: Path, manifest: dict[str, Any], files: dict[str, str]) -> Path:
    """Write a module folder with this manifest and these files."""
    folder = root / f"{manifest['name']}-{manifest['version']}"
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (folder / "module.json").write_text(json.dumps(manifest, indent=2))
    return folder


def emitter(name: str, version: str = "1.0.0") -> dict[str, Any]:
    """Return the manifest of a module that emits `thing.happened` from `POST /emit`."""
    return {
        "name": name,
        "version": version,
        "displayName": name,
        "capabilities": {
            "api": {"routes": [{"method": "POST", "path": "/emit", "handler": "routes/emit.py"}]},
            "events": {
                "emits": [
                    {"name": "thing.happened", "schema": SCHEMA},
                    {"name": "thing.gone", "schema": {}},
                ]
            },
        },
    }


def subscriber(
    name: str, source: str, handler: str = "events/record.py", **subscription: Any
) -> dict[str, Any]:
    """Return the manifest of a module subscribed to `source/thing.happened`."""
    return {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "dependencies": {"modules": {source: "^1.0.0"}},
        "capabilities": {
            "events": {
                "subscribes": [
                    {"event": f"{source}/thing.happened", "handler": handler, **subscription}
                ]
            }
        },
    }


def install(
    services: Services, sources: Path, manifest: dict[str, Any], *, enable: bool = True
) -> str:
    """Add the module with every handler this suite uses, and enable it by default."""
    files = {
        "routes/emit.py": EMIT_ROUTE,
        "events/record.py": RECORD,
        "events/fail.py": FAIL,
        "events/flaky.py": FLAKY,
        "events/gate.py": GATE,
    }
    services.lifecycle.add_bundle(write_module(sources, manifest, files), actor=ACTOR)
    if enable:
        set_status(services, manifest["name"], Status.ENABLED)
    return str(manifest["name"])


def set_status(services: Services, name: str, status: Status) -> None:
    """Enable or disable a module and wait for the operation."""
    done, _, op = services.lifecycle.set_status(name, status, actor=ACTOR)  # type: ignore[misc]
    assert done, f"operation {op} did not finish"


def deliveries(services: Services, **where: Any) -> list[EventDelivery]:
    """Return delivery rows, oldest first, filtered by column values."""
    query = select(EventDelivery).order_by(EventDelivery.id)
    for column, value in where.items():
        query = query.where(getattr(EventDelivery, column) == value)
    with services.db.read() as session:
        return list(session.scalars(query))


def seen(services: Services, module: str) -> list[dict[str, Any]]:
    """Return what a recording subscriber stored, in the order it handled the events."""
    page = services.store.list(module, "seen/", limit=1000)
    return [entry.value for entry in page.items]


def tries(services: Services, module: str, event_id: int) -> int:
    """Return how many times a FAIL or FLAKY handler was called for an event."""
    entry = services.store.get_entry(module, f"tries/{event_id}")
    return 0 if entry is None else int(entry.value)


@dataclass
class Rig:
    """A dispatcher over the test's services on a fake clock, with its own worker pool."""

    services: Services
    dispatcher: Dispatcher
    clock: FakeClock
    pool: WorkerPool

    async def settle(self, rounds: int = 50) -> None:
        """Tick until nothing is running and nothing due is left to claim."""
        for _ in range(rounds):
            await self.dispatcher.tick(self.clock())
            if not self.dispatcher.tasks:
                await self.dispatcher.tick(self.clock())
                if not self.dispatcher.tasks:
                    return
            await self.dispatcher.drain()
        raise AssertionError("the dispatcher did not settle")

    def emit(self, module: str, payload: dict[str, Any], name: str = "thing.happened") -> int:
        """Emit as `module` (its active version), as its worker's emit would."""
        version = self.services.registry.get(module).version
        return self.services.events.emit(module, version, {"name": name, "payload": payload})["id"]


def make_dispatcher(
    services: Services, pool: WorkerPool, clock: FakeClock, **limits: Any
) -> Dispatcher:
    """Return a dispatcher over `services` with this pool, clock and limits."""
    return Dispatcher(
        services.registry,
        services.events.store,
        services.events.catalogs,
        pool,
        services.jobs.runtime_for,
        DispatchLimits(**limits),
        clock=clock,
    )


def with_rig(services: Services, body: Callable[[Rig], Awaitable[T]], **limits: Any) -> T:
    """Run `body(rig)` on a new event loop; stop every worker after."""

    async def main() -> T:
        pool = WorkerPool(services.settings.data_dir, PoolLimits(backoff_base=0.05))
        pool.services.update(services.pool.services)  # store, modules, events
        clock = FakeClock()
        clock.now = services.events.clock()
        services.events.clock = clock  # events are stamped on the rig's clock
        rig = Rig(services, make_dispatcher(services, pool, clock, **limits), clock, pool)
        try:
            return await body(rig)
        finally:
            for task in list(rig.dispatcher.tasks):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rig.dispatcher.drain(), 30)
            await pool.close()

    return asyncio.run(main())


__all__ = ["until"]
