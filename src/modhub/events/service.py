"""Emitting: what a worker's `request.events.emit` reaches, and the platform's own events.

The emitting module is the caller's, from the channel (`CallerContext.module`), never from
the call's arguments; the events it may emit and their payload schemas come from the
calling version's manifest. The event and a pending delivery for each module that
subscribes (enabled or not: a disabled subscriber's deliveries wait) are committed before
`emit` answers. A worker's emit is awaited (`aemit`): on PostgreSQL it is one statement
in autocommit sent from the event loop (events/emitter.py); on SQLite its write goes
through the module store's writer, which commits it on the event loop itself when the
write lock is free (store/writer.py), with the same durability as every other write (WAL,
synchronous=NORMAL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modhub.events.catalog import Catalog, Catalogs, Schemas
from modhub.events.errors import EventInvalid
from modhub.events.publish import payload_json
from modhub.events.store import EventStore
from modhub.manifest.model import EVENT_NAME
from modhub.manifest.subscriptions import PLATFORM_EVENTS, PLATFORM_SOURCE
from modhub.registry import Registry
from modhub.sandbox.channel import CallerContext

MAX_PAYLOAD_BYTES = 256 * 1024
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class EventService:
    """Answers `events` calls from module workers, and emits the platform's events."""

    def __init__(self, registry: Registry, store: EventStore, clock: Clock = utc_now) -> None:
        self.registry = registry
        self.store = store
        self.catalogs = Catalogs(registry)
        self.schemas = Schemas(registry)
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []  # woken after each emit (this node)

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        """Run one events operation for the calling module and return its JSON result."""
        if op != "emit":
            raise EventInvalid(f"op: the events service has no operation '{op}'")
        return await self.aemit(context.module, context.version, args)

    def emit(self, module: str, version: str, args: dict[str, Any]) -> dict[str, int]:
        """Check and store one event of `module` at `version`; return its id and seq."""
        name, payload = _checked(module, args, self.schemas.declared(module, version))
        subscribers = self._subscribers(self.catalogs.current(), module, name)
        write = self.store.publishing(module, name, payload, subscribers, self.clock())
        return self._published(subscribers, *self.store.writes.run(write))

    async def aemit(self, module: str, version: str, args: dict[str, Any]) -> dict[str, int]:
        """`emit`, awaited: what a worker's `events.emit` reaches. The check runs on the loop
        (the payload came over the channel as JSON already), the registry is read in a
        thread only when the cached schemas or catalog are not at hand, and the write is
        `EventStore.aemit` (on PostgreSQL one statement from the loop; on SQLite the store's
        writer, on the loop when the write lock is free)."""
        validators = self.schemas.cached(module, version)
        if validators is None:
            validators = await asyncio.to_thread(self.schemas.declared, module, version)
        name, payload = _checked(module, args, validators)
        catalog = self.catalogs.fresh()
        if catalog is None:
            catalog = await asyncio.to_thread(self.catalogs.current)
        subscribers = self._subscribers(catalog, module, name)
        found = await self.store.aemit(module, name, payload, subscribers, self.clock())
        return self._published(subscribers, *found)

    def emit_platform(self, name: str, payload: dict[str, Any]) -> dict[str, int]:
        """Emit one of the platform's own events (`modhub/<name>`)."""
        if name not in PLATFORM_EVENTS:
            raise EventInvalid(f"name: '{name}' is not a platform event")
        subscribers = self._subscribers(self.catalogs.current(), PLATFORM_SOURCE, name)
        write = self.store.publishing(
            PLATFORM_SOURCE, name, payload_json(payload), subscribers, self.clock()
        )
        return self._published(subscribers, *self.store.writes.run(write))

    @staticmethod
    def _subscribers(catalog: Catalog, source: str, name: str) -> list[str]:
        return [s.module for s in catalog.subscribers.get(f"{source}/{name}", [])]

    def _published(self, subscribers: list[str], event_id: int, seq: int) -> dict[str, int]:
        """Wake this node's dispatcher when the committed event has deliveries."""
        if subscribers:
            for wake in self.listeners:
                wake()
        return {"id": event_id, "seq": seq}


def _checked(module: str, args: dict[str, Any], validators: dict[str, Any]) -> tuple[str, str]:
    """Return an emit's event name and its payload as JSON text, checked against what
    `module` declares (`validators` by event name)."""
    name, payload = args.get("name"), args.get("payload")
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise EventInvalid(f"name: {name!r} is not an event name (dotted lowercase words)")
    validator = validators.get(name)
    if validator is None:
        raise EventInvalid(
            f"name: module '{module}' does not declare the event '{name}' in "
            "capabilities.events.emits"
        )
    return name, _check_payload(name, payload, validator)


def _check_payload(name: str, payload: Any, validator: Any) -> str:
    """Return the payload as JSON text once it is JSON, small enough, and valid."""
    try:
        data = payload_json(payload)
    except (TypeError, ValueError) as exc:
        raise EventInvalid(f"payload: the payload of '{name}' is not JSON: {exc}") from None
    size = len(data.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise EventInvalid(
            f"payload: the payload of '{name}' is {size} bytes, over {MAX_PAYLOAD_BYTES}"
        )
    error = next(iter(validator.iter_errors(payload)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.instance_path)
        field = f"payload/{where}" if where else "payload"
        raise EventInvalid(f"{field}: {error.message} (event '{name}')")
    return data
