"""Emitting: what a worker's `request.events.emit` reaches, and the platform's own events.

The emitting module is the caller's, from the channel (`CallerContext.module`), never from
the call's arguments; the events it may emit and their payload schemas come from the
calling version's manifest. The event and a pending delivery for each module that
subscribes (enabled or not: a disabled subscriber's deliveries wait) are committed before
`emit` answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modhub.events.catalog import Catalogs, Schemas
from modhub.events.errors import EventInvalid
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
        return await asyncio.to_thread(self.emit, context.module, context.version, args)

    def emit(self, module: str, version: str, args: dict[str, Any]) -> dict[str, int]:
        """Check and store one event of `module` at `version`; return its id and seq."""
        name, payload = args.get("name"), args.get("payload")
        if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
            raise EventInvalid(f"name: {name!r} is not an event name (dotted lowercase words)")
        validator = self.schemas.declared(module, version).get(name)
        if validator is None:
            raise EventInvalid(
                f"name: module '{module}' does not declare the event '{name}' in "
                "capabilities.events.emits"
            )
        _check_payload(name, payload, validator)
        return self._publish(module, name, payload)

    def emit_platform(self, name: str, payload: dict[str, Any]) -> dict[str, int]:
        """Emit one of the platform's own events (`modhub/<name>`)."""
        if name not in PLATFORM_EVENTS:
            raise EventInvalid(f"name: '{name}' is not a platform event")
        return self._publish(PLATFORM_SOURCE, name, payload)

    def _publish(self, source: str, name: str, payload: Any) -> dict[str, int]:
        subscribers = [
            s.module for s in self.catalogs.current().subscribers.get(f"{source}/{name}", [])
        ]
        with self.store.db.write() as session:
            event_id, seq = self.store.publish(
                session, source, name, payload, subscribers, self.clock()
            )
        if subscribers:
            for wake in self.listeners:
                wake()
        return {"id": event_id, "seq": seq}


def _check_payload(name: str, payload: Any, validator: Any) -> None:
    try:
        size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise EventInvalid(f"payload: the payload of '{name}' is not JSON: {exc}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise EventInvalid(
            f"payload: the payload of '{name}' is {size} bytes, over {MAX_PAYLOAD_BYTES}"
        )
    error = next(iter(validator.iter_errors(payload)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.instance_path)
        field = f"payload/{where}" if where else "payload"
        raise EventInvalid(f"{field}: {error.message} (event '{name}')")
