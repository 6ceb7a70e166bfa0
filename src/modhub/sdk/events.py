"""Events: what a handler emits (`request.events.emit`) and what a subscriber receives.

An event is emitted by name (declared in the module's `capabilities.events.emits`) with a
JSON payload; the platform checks the payload against the declared schema and stores the
event before `emit` returns, then delivers it at least once to every subscribing module.
"""

from __future__ import annotations

import json as _json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from modhub.sdk.services import (
    AsyncTransport,
    EventInvalid,
    Transport,
    _aunavailable,
    _unavailable,
)

if TYPE_CHECKING:
    from modhub.sdk.services import ModuleCalls, Store


@dataclass(frozen=True)
class Emitted:
    """An event as stored: its id and its sequence number among the module's events."""

    id: int
    seq: int


class Events:
    """Emit the events this module declares; each is durable when `emit` returns."""

    def __init__(
        self, transport: Transport = _unavailable, atransport: AsyncTransport = _aunavailable
    ) -> None:
        self._call = transport
        self._acall = atransport
        self.emitted: list[tuple[str, Any]] = []  # what `in_memory()` events recorded

    @classmethod
    def in_memory(cls) -> Events:
        """Return events kept in this process, in `emitted` as (name, payload): for tests
        (payloads are not checked against the manifest's schemas here)."""
        emitted: list[tuple[str, Any]] = []

        def call(service: str, op: str, args: dict[str, Any]) -> Any:
            emitted.append((args["name"], args["payload"]))
            return {"id": len(emitted), "seq": len(emitted)}

        async def acall(service: str, op: str, args: dict[str, Any]) -> Any:
            return call(service, op, args)

        events = cls(call, acall)
        events.emitted = emitted
        return events

    def emit(self, name: str, payload: Any = None) -> Emitted:
        """Emit event `name` with `payload`; raise EventInvalid (naming the field) when the
        name is not declared or the payload breaks the declared schema."""
        answer = self._call("events", "emit", _emit_args(name, payload))
        return Emitted(int(answer["id"]), int(answer["seq"]))

    async def aemit(self, name: str, payload: Any = None) -> Emitted:
        """`emit`, awaitable."""
        answer = await self._acall("events", "emit", _emit_args(name, payload))
        return Emitted(int(answer["id"]), int(answer["seq"]))


def _emit_args(name: str, payload: Any) -> dict[str, Any]:
    if not isinstance(name, str):
        raise EventInvalid(f"name: an event name is a string, not {type(name).__name__}")
    try:
        _json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventInvalid(f"payload: the payload of '{name}' is not JSON: {exc}") from None
    return {"name": name, "payload": payload}


def _no_store() -> Store:
    from modhub.sdk.services import Store

    return Store()


def _no_calls() -> ModuleCalls:
    from modhub.sdk.services import ModuleCalls

    return ModuleCalls()


@dataclass
class Event:
    """What a subscription's handler receives: one event, and the module's services."""

    id: int
    name: str  # the event's name, as its emitter declares it: vm.created
    source: str  # the emitting module ("modhub" for platform events)
    payload: Any
    emitted_at: datetime
    attempt: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("module"))
    store: Store = field(default_factory=_no_store)
    modules: ModuleCalls = field(default_factory=_no_calls)
    events: Events = field(default_factory=Events)

    @property
    def ref(self) -> str:
        """Return the event as a subscription names it: `source/name`."""
        return f"{self.source}/{self.name}"


class EventHandler(Protocol):
    """The contract of a subscription handler: `def handler(event)` (or `async def`)."""

    def __call__(self, event: Event, /) -> Any:
        """Handle one delivery of an event; raise to have it tried again."""
