"""Events and their deliveries in the database: publish, claim, finish, list, prune.

Publishing stores the event and one `pending` delivery per subscriber in one transaction
(a worker's emit: its own, on PostgreSQL one statement from the loop (`emitter.py`), else
through the module store's writer; a platform event: the registry change's): the event is
durable when that commits. Its source's `event_seqs` row, locked until then, numbers it in
the source's order. The statements are in `publish.py`; the claim and finish paths are
SQLAlchemy Core.

Claiming and finishing run the statements of `claim.py` (docs/events.md, "Order and
claiming"); a finished run is recorded with its pair's next run claimed in the same
transaction (`go_on`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from modhub.db import Database
from modhub.db.models import Event, EventDelivery
from modhub.errors import InvalidInput, NotFound
from modhub.events import publish
from modhub.events.claim import (
    CLAIM_LOCK,
    DEAD,
    DELIVERIES,
    PENDING,
    RUNNING,
    STATUSES,
    Claimed,
    claim_run,
    claimable,
    delivered,
    running,
)
from modhub.events.emitter import LoopEmitter
from modhub.events.publish import CHANNEL, payload_json
from modhub.store.writer import Write, Writes

_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
MAX_PAGE = 500


_D = DELIVERIES  # Core: the claim and finish paths load no ORM objects


class EventStore:
    """The events' tables."""

    def __init__(self, db: Database, writes: Writes | None = None) -> None:
        self.db = db
        # How an emit's write reaches the database: the module store's writer when the
        # services share it (on SQLite: on the loop when the lock is free, else grouped in
        # the writer thread; store/writer.py), else a transaction in the calling thread.
        self._writer = db.engine.execution_options(immediate=True)
        self.writes = writes or Writes(self._writer)
        # On PostgreSQL a worker's emit goes from the loop in one round trip (`aemit`).
        self.emitter = LoopEmitter(db.url) if db.dialect == "postgresql" else None

    def close(self) -> None:
        """Close the emitter's connection."""
        if self.emitter is not None:
            self.emitter.close()

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        session: Session,
        source: str,
        name: str,
        payload: Any,
        subscribers: Iterable[str],
        now: datetime,
    ) -> tuple[int, int]:
        """Store an event and a pending delivery per subscriber in `session`'s transaction;
        return the event's id and its sequence number among `source`'s events."""
        write = self.publishing(source, name, payload_json(payload), subscribers, now)
        return write(session.connection())

    def publishing(
        self,
        source: str,
        name: str,
        payload: str,
        subscribers: Iterable[str],
        now: datetime,
    ) -> Write[tuple[int, int]]:
        """Return the write that stores an event (its payload already as JSON text) and a
        pending delivery per subscriber, for `self.writes` or a transaction of the caller's."""
        ordered = sorted(set(subscribers))
        return publish.publishing(self.db.dialect, source, name, payload, ordered, now)

    async def aemit(
        self, source: str, name: str, payload: str, subscribers: Iterable[str], now: datetime
    ) -> tuple[int, int]:
        """Store an event (its payload already as JSON text) and a pending delivery per
        subscriber, committed when this returns; return the event's id and seq. On
        PostgreSQL one statement from the loop when the emitter is free, else (and on
        SQLite) through `self.writes`."""
        ordered = sorted(set(subscribers))
        if self.emitter is not None:
            found = await self.emitter.emit(*publish.emitted(source, name, payload, ordered, now))
            if found is not None:
                return found
        return await self.writes.arun(self.publishing(source, name, payload, ordered, now))

    # -- claiming and finishing ------------------------------------------------------------

    def claim(
        self,
        owner: str,
        now: datetime,
        room: int,
        runnable: Collection[str],
        lease: timedelta,
        batch: int = 32,
    ) -> list[list[Claimed]]:
        """Claim, for up to `room` ready (subscriber, source) pairs of `runnable` subscribers,
        each pair's next deliveries in order (at most `batch` each)."""
        if room <= 0 or not runnable:
            return []
        mine = _D.c.subscriber.in_(sorted(runnable))
        with self.db.query() as connection:  # most rounds find nothing: no write transaction
            found = connection.execute(select(_D.c.id).where(mine, claimable(now)).limit(1))
            if found.first() is None:
                return []
        postgres = self.db.dialect == "postgresql"
        claimed: list[list[Claimed]] = []
        with self._writer.begin() as connection:
            if postgres:  # claimers take turns; each claim is a few short statements
                connection.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
            pairs = connection.execute(
                select(_D.c.subscriber, _D.c.source)
                .where(mine, claimable(now))
                .group_by(_D.c.subscriber, _D.c.source)
                .order_by(func.min(_D.c.id))
                .limit(room)
            ).all()
            for subscriber, source in pairs:
                run = claim_run(connection, subscriber, source, now, batch, postgres)
                if not run:
                    continue
                connection.execute(running(run, owner, now, lease))
                claimed.append(run)
        return claimed

    def go_on(
        self,
        done: Collection[int],
        owner: str,
        now: datetime,
        pair: tuple[str, str],
        lease: timedelta,
        batch: int = 32,
    ) -> list[Claimed]:
        """Mark a finished run's deliveries delivered (those still this claimer's) and claim
        the (subscriber, source) pair's next run in the same transaction; return it (empty
        when nothing of the pair is due)."""
        postgres = self.db.dialect == "postgresql"
        with self._writer.begin() as connection:
            if postgres:  # a claim: claimers take turns
                connection.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
            if done:
                connection.execute(delivered(done, owner, now))
            run = claim_run(connection, *pair, now, batch, postgres)
            if run:
                connection.execute(running(run, owner, now, lease))
        return run

    def delivered(self, ids: Collection[int], owner: str, now: datetime) -> int:
        """Mark deliveries this claimer ran as delivered; return how many were still its."""
        if not ids:
            return 0
        with self._writer.begin() as connection:
            result = connection.execute(delivered(ids, owner, now))
        return int(result.rowcount)

    def failed(
        self, delivery: int, owner: str, error: str, now: datetime, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt: pending again at `retry_at`, or dead when None."""
        values: dict[str, Any] = {"last_error": error[:4000], "lease_until": None}
        if retry_at is None:
            values.update(status=DEAD, finished_at=now)
        else:
            values.update(status=PENDING, next_attempt_at=retry_at, claimed_by=None)
        with self._writer.begin() as connection:
            result = connection.execute(
                update(_D)
                .where(_D.c.id == delivery, _D.c.claimed_by == owner, _D.c.status == RUNNING)
                .values(**values)
            )
        return bool(result.rowcount)

    def release(self, ids: Collection[int], owner: str) -> None:
        """Give back claimed deliveries that were not attempted (pending, attempt undone)."""
        if not ids:
            return
        with self._writer.begin() as connection:
            connection.execute(
                update(_D)
                .where(_D.c.id.in_(list(ids)), _D.c.claimed_by == owner, _D.c.status == RUNNING)
                .values(status=PENDING, claimed_by=None, lease_until=None, attempt=_D.c.attempt - 1)
            )

    def renew(self, owner: str, now: datetime, lease: timedelta) -> int:
        """Extend the lease of every delivery this claimer is running."""
        with self._writer.begin() as connection:
            result = connection.execute(
                update(_D)
                .where(_D.c.claimed_by == owner, _D.c.status == RUNNING)
                .values(lease_until=now + lease)
            )
        return int(result.rowcount)

    # -- housekeeping ----------------------------------------------------------------------

    def prune(self, before: datetime) -> int:
        """Delete events emitted before `before` with all their deliveries."""
        with self.db.write() as session:
            old = select(Event.id).where(Event.emitted_at < before)
            session.execute(
                delete(EventDelivery)
                .where(EventDelivery.event_id.in_(old))
                .execution_options(synchronize_session=False)
            )
            result = session.execute(
                delete(Event)
                .where(Event.emitted_at < before)
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def drop_pending(self, registered: Collection[str]) -> int:
        """Delete the pending deliveries of subscribers that are no longer registered."""
        with self.db.write() as session:
            result = session.execute(
                delete(EventDelivery)
                .where(
                    EventDelivery.status == PENDING,
                    EventDelivery.subscriber.not_in(sorted(registered)),
                )
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def redeliver(self, event_id: int, subscriber: str, now: datetime) -> None:
        """Deliver an event to a subscriber again (a dead or delivered one: pending, attempt
        0); a delivery pending or running already is left as it is."""
        with self.db.write() as session:
            row = session.scalar(
                select(EventDelivery).where(
                    EventDelivery.event_id == event_id, EventDelivery.subscriber == subscriber
                )
            )
            if row is None:
                raise NotFound(
                    f"event {event_id} has no delivery to '{subscriber}'",
                    event=event_id,
                    subscriber=subscriber,
                )
            if row.status in (PENDING, RUNNING):
                return
            row.status, row.attempt, row.next_attempt_at = PENDING, 0, now
            row.claimed_by = row.lease_until = row.finished_at = None
            if self.db.dialect == "postgresql":
                session.execute(_NOTIFY)

    # -- reading ---------------------------------------------------------------------------

    def search(
        self,
        *,
        source: str | None = None,
        name: str | None = None,
        status: str | None = None,
        subscriber: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Return a page of events, newest first, each with its deliveries."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                f"status must be one of {', '.join(STATUSES)}, not {status!r}",
                errors=[{"path": "/status", "code": "not_allowed", "message": "unknown status"}],
            )
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        where: list[Any] = []
        if source:
            where.append(Event.source == source)
        if name:
            where.append(Event.name == name)
        if status or subscriber:
            match = select(EventDelivery.event_id)
            if status:
                match = match.where(EventDelivery.status == status)
            if subscriber:
                match = match.where(EventDelivery.subscriber == subscriber)
            where.append(Event.id.in_(match))
        with self.db.read() as session:
            total = session.scalar(select(func.count(Event.id)).where(*where)) or 0
            events = list(
                session.scalars(
                    select(Event)
                    .where(*where)
                    .order_by(Event.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            deliveries = _deliveries(session, [e.id for e in events])
        return {
            "items": [public(e, deliveries.get(e.id, [])) for e in events],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def get(self, event_id: int) -> dict[str, Any]:
        """Return one event with its deliveries."""
        with self.db.read() as session:
            event = session.get(Event, event_id)
            if event is None:
                raise NotFound(f"no event {event_id}", event=event_id)
            return public(event, _deliveries(session, [event_id]).get(event_id, []))


def _deliveries(session: Session, ids: list[int]) -> dict[int, list[EventDelivery]]:
    found: dict[int, list[EventDelivery]] = {}
    if not ids:
        return found
    for row in session.scalars(
        select(EventDelivery)
        .where(EventDelivery.event_id.in_(ids))
        .order_by(EventDelivery.subscriber)
    ):
        found.setdefault(row.event_id, []).append(row)
    return found


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def delivery_public(row: EventDelivery) -> dict[str, Any]:
    """Return a delivery as the API shows it."""
    return {
        "subscriber": row.subscriber,
        "status": row.status,
        "attempt": row.attempt,
        "nextAttemptAt": _iso(row.next_attempt_at) if row.status == PENDING else None,
        "claimedBy": row.claimed_by if row.status == RUNNING else None,
        "lastError": row.last_error,
        "startedAt": _iso(row.started_at),
        "finishedAt": _iso(row.finished_at),
    }


def public(event: Event, deliveries: list[EventDelivery]) -> dict[str, Any]:
    """Return an event with its deliveries as the API shows it."""
    return {
        "id": event.id,
        "source": event.source,
        "name": event.name,
        "seq": event.seq,
        "payload": event.payload,
        "emittedAt": event.emitted_at.isoformat(),
        "deliveries": [delivery_public(d) for d in deliveries],
    }
