"""Publishing: the statements that store an event and its deliveries, numbered in its
source's order (docs/events.md, "Emitting", "On PostgreSQL an emit is one statement").

`publishing` returns the write for a transaction (the store's writer's or the caller's);
`emitted` gives the one statement the loop's emitter sends on PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from modhub.events.emitter import Statement
from modhub.jobs.claim import module_key
from modhub.store import sqlite
from modhub.store.writer import LARGEST_INLINE, Offload, on_loop

SEQ_LOCK = 0x65767371  # first key of the per-source advisory lock ("evsq")
CHANNEL = "modhub_events"  # NOTIFY channel: an event was emitted (a hint to claim now)
PENDING = "pending"
_SEQ_LOCK = text(f"SELECT pg_advisory_xact_lock({SEQ_LOCK}, :key)")
# The source's next seq (its `event_seqs` row, locked until the commit: one source's emits
# commit in seq order), the event with it, then its deliveries (RETURNING: SQLite 3.35+).
_SQLITE_SEQ = (
    "INSERT INTO event_seqs (source, seq) VALUES (?, 1) "
    "ON CONFLICT (source) DO UPDATE SET seq = event_seqs.seq + 1 RETURNING seq"
)
_SQLITE_EVENT = (
    "INSERT INTO events (source, name, seq, payload, emitted_at) VALUES (?, ?, ?, ?, ?) "
    "RETURNING id"
)
_SQLITE_DELIVERY = (
    "INSERT INTO event_deliveries (event_id, subscriber, source, seq, status, attempt, "
    "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)"
)
# On PostgreSQL, one statement. The source's advisory lock first: nodes before migration
# 0010 number by `max(seq) + 1` under it, so they wait for this emit and see it; the seq is
# the greater of the source's row and that `max(seq)` plus one (an old node's event may be
# newer than the row), read as the last row of the (source, seq) index. Then the event,
# its deliveries, and a NOTIFY when there are any (other nodes claim when this commits).
_PG_PUBLISH_SQL = f"""WITH l AS (
    SELECT pg_advisory_xact_lock({SEQ_LOCK}, CAST(:key AS integer)) AS locked
), next_seq AS (
    INSERT INTO event_seqs (source, seq)
    SELECT CAST(:source AS text),
        coalesce((SELECT seq FROM events WHERE source = CAST(:source AS text)
            ORDER BY seq DESC LIMIT 1), 0) + 1
    FROM l
    ON CONFLICT (source) DO UPDATE SET seq = greatest(event_seqs.seq + 1, excluded.seq)
    RETURNING seq
), e AS (
    INSERT INTO events (source, name, seq, payload, emitted_at)
    SELECT CAST(:source AS text), :name, next_seq.seq, CAST(:payload AS json),
        CAST(:now AS timestamptz)
    FROM next_seq
    RETURNING id, seq
), d AS (
    INSERT INTO event_deliveries (event_id, subscriber, source, seq, status, attempt,
        next_attempt_at, created_at)
    SELECT e.id, subscriber, CAST(:source AS text), e.seq, 'pending', 0,
        CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM e CROSS JOIN unnest(CAST(:subscribers AS text[])) AS subscriber
)
SELECT e.id, e.seq FROM e"""
_PG_NOTIFY_TOO = f" CROSS JOIN (SELECT pg_notify('{CHANNEL}', '')) AS n"
_PG_PUBLISH = text(_PG_PUBLISH_SQL)
_PG_PUBLISH_NOTIFY = text(_PG_PUBLISH_SQL + _PG_NOTIFY_TOO)
# The same for the loop's emitter (events/emitter.py): positional parameters, sent as text
# in this order (`emitted`).
_PARAMS = ("key", "source", "name", "payload", "now", "subscribers")


def _positional(sql: str) -> bytes:
    return re.sub(
        rf":({'|'.join(_PARAMS)})\b", lambda m: f"${_PARAMS.index(m[1]) + 1}", sql
    ).encode()


_PG_EMIT = Statement(b"modhub_emit", _positional(_PG_PUBLISH_SQL))
_PG_EMIT_NOTIFY = Statement(b"modhub_emit_notify", _positional(_PG_PUBLISH_SQL + _PG_NOTIFY_TOO))


def publishing(
    dialect: str, source: str, name: str, payload: str, subscribers: list[str], now: datetime
) -> Callable[[Connection], tuple[int, int]]:
    """Return the write that stores an event (its payload as JSON text) and a pending
    delivery per subscriber (sorted, distinct) in a transaction; it answers (id, seq)."""
    if dialect == "postgresql":
        return lambda connection: _publish_postgres(
            connection, source, name, payload, subscribers, now
        )
    return lambda connection: _publish_sqlite(connection, source, name, payload, subscribers, now)


def emitted(
    source: str, name: str, payload: str, subscribers: list[str], now: datetime
) -> tuple[Statement, list[bytes]]:
    """Return the PostgreSQL statement and its parameters (PostgreSQL's text forms) that
    publish one event on their own, as one implicit transaction."""
    statement = _PG_EMIT_NOTIFY if subscribers else _PG_EMIT
    values = _params(source, name, payload, subscribers, now)
    values["now"] = now.isoformat()
    values["subscribers"] = text_array(subscribers)
    return statement, [str(values[key]).encode() for key in _PARAMS]


def text_array(items: list[str]) -> str:
    """Return PostgreSQL's text form of a `text[]`: every element quoted, its backslashes
    and double quotes escaped (so "NULL", commas and braces stay text)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def payload_json(payload: Any) -> str:
    """Return a payload as the JSON text stored (compact; NaN and infinities refused)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def _publish_sqlite(
    connection: Connection,
    source: str,
    name: str,
    payload: str,
    subscribers: list[str],
    now: datetime,
) -> tuple[int, int]:
    """Publish on SQLite: plain SQL on the driver's connection, inside the caller's
    transaction (which holds the write lock: BEGIN IMMEDIATE): the source's next seq from
    its `event_seqs` row, the event, its deliveries."""
    if len(payload) > LARGEST_INLINE and on_loop(connection):
        raise Offload  # a large payload is written by the writer thread, not on the loop
    raw = sqlite.driver(connection)
    at = sqlite.stamp(now)
    seq = int(raw.execute(_SQLITE_SEQ, (source,)).fetchone()[0])
    event_id = int(raw.execute(_SQLITE_EVENT, (source, name, seq, payload, at)).fetchone()[0])
    if subscribers:
        raw.executemany(
            _SQLITE_DELIVERY, [(event_id, s, source, seq, PENDING, at, at) for s in subscribers]
        )
    return event_id, seq


def _publish_postgres(
    connection: Connection,
    source: str,
    name: str,
    payload: str,
    subscribers: list[str],
    now: datetime,
) -> tuple[int, int]:
    """Publish on PostgreSQL in the caller's transaction: the source's advisory lock, then
    the publish statement, whose snapshot is taken after the lock, so its `max(seq)` sees
    every event an old node numbered (see `_PG_PUBLISH_SQL`)."""
    connection.execute(_SEQ_LOCK, {"key": module_key(source)})
    statement = _PG_PUBLISH_NOTIFY if subscribers else _PG_PUBLISH
    found = connection.execute(statement, _params(source, name, payload, subscribers, now)).one()
    return int(found[0]), int(found[1])


def _params(
    source: str, name: str, payload: str, subscribers: list[str], now: datetime
) -> dict[str, Any]:
    return {
        "key": module_key(source),
        "source": source,
        "name": name,
        "payload": payload,
        "now": now,
        "subscribers": subscribers,
    }
