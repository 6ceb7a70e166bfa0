"""Claiming deliveries: which are due, and the statements that claim and finish them.

One claimer at a time (an advisory transaction lock on PostgreSQL, `CLAIM_LOCK`) takes, for
each (subscriber, source) pair that is ready, the unbroken run of that pair's oldest
unfinished deliveries that are due, locked `FOR UPDATE SKIP LOCKED` on PostgreSQL. A pair
with a delivery running under a live lease, or whose oldest delivery waits for a retry, is
left alone: that is what keeps each subscriber's deliveries in emit order per source. A
`running` delivery whose lease expired (its node died) is claimable again. SQLAlchemy
Core: the claim and finish paths load no ORM objects. `EventStore` (store.py) runs them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, or_, select, tuple_, update

from modhub.db.models import Event, EventDelivery

PENDING, RUNNING, DELIVERED, DEAD = "pending", "running", "delivered", "dead"
STATUSES = (PENDING, RUNNING, DELIVERED, DEAD)
CLAIM_LOCK = 0x6576636C  # the claimers' advisory lock ("evcl")


@dataclass(frozen=True)
class Claimed:
    """A delivery this claimer now runs (its row is `running`, `attempt` counts this one)."""

    id: int
    event_id: int
    subscriber: str
    source: str
    name: str
    seq: int
    attempt: int
    payload: Any
    emitted_at: datetime


DELIVERIES = cast(Table, EventDelivery.__table__)
_D, _E = DELIVERIES, cast(Table, Event.__table__)
_BUSY = _D.alias("busy")


def claimable(now: datetime) -> Any:
    """Deliveries due (pending) or taken back (running, lease expired), of a pair with no
    delivery running under a live lease: such a pair waits for that run, and a claimer woken
    meanwhile (by every emit) finds it without a write transaction."""
    busy = select(_BUSY.c.subscriber, _BUSY.c.source).where(
        _BUSY.c.status == RUNNING, _BUSY.c.lease_until >= now
    )  # not correlated: read once a statement (few rows run at a time)
    return and_(
        or_(
            and_(_D.c.status == PENDING, _D.c.next_attempt_at <= now),
            and_(_D.c.status == RUNNING, _D.c.lease_until < now),
        ),
        tuple_(_D.c.subscriber, _D.c.source).not_in(busy),
    )


def running(run: list[Claimed], owner: str, now: datetime, lease: timedelta) -> Any:
    """The UPDATE that makes a claimed run's deliveries `running` under `owner`'s lease."""
    return (
        update(_D)
        .where(_D.c.id.in_([c.id for c in run]))
        .values(
            status=RUNNING,
            claimed_by=owner,
            lease_until=now + lease,
            started_at=now,
            attempt=_D.c.attempt + 1,
        )
    )


def delivered(ids: Collection[int], owner: str, now: datetime) -> Any:
    """The UPDATE that marks deliveries delivered, those `owner` still runs."""
    return (
        update(_D)
        .where(_D.c.id.in_(list(ids)), _D.c.claimed_by == owner, _D.c.status == RUNNING)
        .values(status=DELIVERED, finished_at=now, lease_until=None, last_error=None)
    )


def claim_run(
    connection: Connection, subscriber: str, source: str, now: datetime, batch: int, postgres: bool
) -> list[Claimed]:
    """Return the pair's unbroken run of due deliveries from its oldest unfinished one (at
    most `batch`), with their events, locked on PostgreSQL (rows another transaction holds
    are skipped, and the run ends before the first of them)."""
    unfinished = (
        _D.c.subscriber == subscriber,
        _D.c.source == source,
        _D.c.status.in_((PENDING, RUNNING)),
    )
    query = (
        select(
            _D.c.id,
            _D.c.event_id,
            _D.c.seq,
            _D.c.status,
            _D.c.attempt,
            _D.c.next_attempt_at,
            _D.c.lease_until,
            _E.c.name,
            _E.c.payload,
            _E.c.emitted_at,
        )
        .join_from(_D, _E, _E.c.id == _D.c.event_id)
        .where(*unfinished)
        .order_by(_D.c.seq)
        .limit(batch)
    )
    expected: list[int] | None = None
    if postgres:
        # A row another transaction holds (a finish in flight) is skipped; the run must
        # still start at the pair's oldest unfinished delivery and miss none, as the
        # committed rows say, or it would overtake one.
        query = query.with_for_update(skip_locked=True, of=_D)
        expected = list(
            connection.scalars(select(_D.c.seq).where(*unfinished).order_by(_D.c.seq).limit(batch))
        )
    run: list[Claimed] = []
    for k, row in enumerate(connection.execute(query)):
        if expected is not None and (k >= len(expected) or expected[k] != row.seq):
            break
        due = row.status == PENDING and row.next_attempt_at <= now
        expired = row.status == RUNNING and row.lease_until is not None and row.lease_until < now
        if not (due or expired):
            break  # running, or waiting for a retry: the rest waits behind it
        run.append(
            Claimed(
                row.id,
                row.event_id,
                subscriber,
                source,
                row.name,
                row.seq,
                row.attempt + 1,
                row.payload,
                row.emitted_at,
            )
        )
    return run
