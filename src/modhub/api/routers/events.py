"""Events: what modules emitted, each subscriber's delivery state, and delivering again."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from modhub.api.deps import ServicesDep, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.registry.types import Shape

router = APIRouter(prefix="/events", tags=["events"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.MODULES_WRITE))]
DeliveryStatus = Literal["pending", "running", "delivered", "dead"]
# Bounded so that no number reaches the database beyond what it stores (SQLite: 64 bits).
EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class DeliveryView(Shape):
    subscriber: str
    status: DeliveryStatus
    attempt: int
    next_attempt_at: datetime | None = None
    claimed_by: str | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class EventView(Shape):
    id: int
    source: str
    name: str
    seq: int
    payload: Any = None
    emitted_at: datetime
    deliveries: list[DeliveryView]


class EventPage(Shape):
    items: list[EventView]
    total: int
    limit: int
    offset: int


@router.get("", responses=responses(401, 403, 422))
def list_events(
    svc: ServicesDep,
    _principal: Reader,
    source: Annotated[str | None, Query(max_length=64, description="The emitting module")] = None,
    name: Annotated[str | None, Query(max_length=128, description="The event's name")] = None,
    status: Annotated[
        DeliveryStatus | None, Query(description="Events with a delivery in this state")
    ] = None,
    subscriber: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> EventPage:
    """Return events, newest first, each with every subscriber's delivery state."""
    page = svc.events.store.search(
        source=source,
        name=name,
        status=status,
        subscriber=subscriber,
        limit=limit,
        offset=offset,
    )
    return EventPage.model_validate(page)


@router.get("/{event_id}", responses=responses(401, 403, 404))
def get_event(event_id: EventId, svc: ServicesDep, _principal: Reader) -> EventView:
    """Return one event with its payload and every subscriber's delivery state."""
    return EventView.model_validate(svc.events.store.get(event_id))


@router.post("/{event_id}/redeliver", responses=responses(401, 403, 404, 422))
async def redeliver(
    event_id: EventId,
    svc: ServicesDep,
    _principal: Writer,
    subscriber: Annotated[str, Query(min_length=1, max_length=64, description="The module")],
) -> EventView:
    """Deliver the event to `subscriber` again (a dead or delivered one; a delivery pending
    or running is left as it is). It runs when the subscriber is enabled."""
    store = svc.events.store
    await asyncio.to_thread(store.redeliver, event_id, subscriber, svc.events.clock())
    svc.dispatcher.wake()
    return EventView.model_validate(await asyncio.to_thread(store.get, event_id))
