"""Each module's own key-value store, in the platform's database.

Keys belong to a module *name*, so data outlives upgrades, rollbacks and restarts. Every
write of one module takes that module's usage row first (`SELECT … FOR UPDATE` on
PostgreSQL, `BEGIN IMMEDIATE` on SQLite): a module's writes are ordered, so `incr` and
`if_version` need no retry loop, and the usage kept in that row is exact. Expired keys are
invisible at once (readers, `usage` and the quota leave them out) and deleted by
`purge_expired`. Writes go through `store/writer.py` (grouped into shared transactions on
SQLite); the statements are in `store/statements.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from modhub.db import Database
from modhub.db.models import utcnow
from modhub.store import sqlite
from modhub.store import statements as sql
from modhub.store.checks import (
    MAX_KEY_BYTES,
    MAX_PAGE,
    MAX_TTL,
    MAX_VALUE_BYTES,
    check_key,
    check_version,
    decode_cursor,
    encodable,
    encode,
    encode_cursor,
    expect,
    successor,
)
from modhub.store.errors import InvalidValue, QuotaExceeded
from modhub.store.writer import (
    LARGEST_INLINE,
    GroupWrites,
    LoopWrites,
    Offload,
    Write,
    Writes,
    on_loop,
)

__all__ = [  # the limits live in checks.py; importing them from here keeps working
    "DEFAULT_STORAGE_MB",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Entry",
    "ModuleStore",
    "Page",
    "Usage",
]

DEFAULT_STORAGE_MB = 64  # runtime.storageMb when the manifest says nothing
MB = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    version: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Page:
    items: list[Entry]
    cursor: str | None


@dataclass(frozen=True)
class Usage:
    keys: int
    bytes: int


class ModuleStore:
    """get, set, delete, list and incr on one module's keys, each one transaction."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        # Core connections, not ORM sessions: a session's overhead doubled a set. SQLite's
        # writes start with BEGIN IMMEDIATE (db/database.py), so they are already ordered.
        self._postgres = db.dialect == "postgresql"
        writer = db.engine.execution_options(immediate=True)
        path = db.engine.url.database
        embedded_file = not self._postgres and path not in (None, "", ":memory:")
        # On an SQLite file, an awaited write is tried on the loop first (writer.py).
        self.writes: Writes = (
            Writes(writer)
            if self._postgres
            else GroupWrites(writer, LoopWrites(str(path)) if embedded_file else None)
        )
        self._loop_reader = sqlite.LoopReader(str(path)) if embedded_file else None
        # A read is one statement: on PostgreSQL, no BEGIN and ROLLBACK round trips for it.
        self._reader = (
            db.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._postgres
            else db.engine
        )

    def close(self) -> None:
        """End the writer's thread and close the connections the store keeps of its own."""
        self.writes.close()
        if self._loop_reader is not None:
            self._loop_reader.close()

    # -- reading -----------------------------------------------------------------------------

    def get_entry(self, module: str, key: str) -> Entry | None:
        """Return the live entry of `key`, or None."""
        check_key(key)
        with self._reader.connect() as connection:
            if not self._postgres:
                found = sqlite.get(connection, module, key, self.clock())
            else:
                params = {"module": module, "key": key, "now": self.clock()}
                found = connection.execute(sql.GET, params).first()
        return None if found is None else Entry(found[0], json.loads(found[1]), *found[2:])

    async def aget_entry(self, module: str, key: str) -> Entry | None:
        """`get_entry`, awaited: on SQLite read on the loop at once when it can."""
        check_key(key)
        if self._loop_reader is not None:
            read, found = self._loop_reader.get(module, key, self.clock())
            if read:
                return None if found is None else Entry(found[0], json.loads(found[1]), *found[2:])
        return await asyncio.to_thread(self.get_entry, module, key)

    def list(
        self, module: str, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Return up to `limit` live entries whose keys start with `prefix`, in key order
        (by code point, which is UTF-8 byte order, on both databases)."""
        if not isinstance(prefix, str) or "\x00" in prefix or not encodable(prefix):
            raise InvalidValue(f"prefix must be a string of valid Unicode without NUL: {prefix!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidValue(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")
        after = decode_cursor(cursor) if cursor is not None else None
        use_after = after is not None and after >= prefix
        high = successor(prefix) if prefix else None
        params: dict[str, Any] = {"module": module, "now": self.clock(), "limit": limit + 1}
        params["after" if use_after else "low"] = after if use_after else prefix
        if high is not None:
            params["high"] = high
        with self._reader.connect() as connection:
            rows = connection.execute(sql.LIST[use_after, high is not None], params).all()
        items = [Entry(r[0], json.loads(r[1]), r[2], r[3]) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].key) if more else None)

    def usage(self, module: str, connection: Connection | None = None) -> Usage:
        """Return how many live keys the module keeps and their bytes (key + JSON value).

        Read on `connection` (one of `db.query()`, which reads as the store's own do) when
        given, else on one of the store's.
        """
        with (
            self._reader.connect() if connection is None else nullcontext(connection) as connection
        ):
            found = connection.execute(sql.USAGE, {"module": module, "now": self.clock()}).first()
        return Usage(0, 0) if found is None else Usage(int(found[0]), int(found[1]))

    # -- writing -----------------------------------------------------------------------------
    # Each write has a blocking form (`set`) and an awaitable one (`aset`): both check their
    # input at once, then run the same `Write` through `self.writes`.

    def set(
        self,
        module: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        quota_bytes: int,
    ) -> int:
        """Store `value` under `key` (without `ttl`, it never expires); return its version."""
        return self.writes.run(self._set(module, key, value, ttl, if_version, quota_bytes))

    async def aset(
        self,
        module: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        quota_bytes: int,
    ) -> int:
        """`set`, awaited (the event loop never waits for the database)."""
        return await self.writes.arun(self._set(module, key, value, ttl, if_version, quota_bytes))

    def incr(self, module: str, key: str, by: int = 1, *, quota_bytes: int) -> int:
        """Add `by` to the integer under `key` (absent or expired: 0); return the result.
        A ttl the key has is kept."""
        return self.writes.run(self._incr(module, key, by, quota_bytes))

    async def aincr(self, module: str, key: str, by: int = 1, *, quota_bytes: int) -> int:
        """`incr`, awaited."""
        return await self.writes.arun(self._incr(module, key, by, quota_bytes))

    def delete(self, module: str, key: str, *, if_version: int | None = None) -> bool:
        """Delete `key`; return whether it existed (live)."""
        return self.writes.run(self._delete(module, key, if_version))

    async def adelete(self, module: str, key: str, *, if_version: int | None = None) -> bool:
        """`delete`, awaited."""
        return await self.writes.arun(self._delete(module, key, if_version))

    def drop(self, module: str) -> Usage:
        """Delete every key of `module`; return the live keys and bytes that went (expired
        ones go too, uncounted: no reader saw them any more)."""

        def write(session: Connection) -> Usage:
            keys, used = self._lock(session, module)
            expired = session.execute(sql.GONE, {"module": module, "now": self.clock()}).one()
            session.execute(sql.DELETE_ALL, {"module": module})
            # The row stays (at zero): a writer waiting on its lock must find it, never a
            # deleted row (PostgreSQL's FOR UPDATE then skips it and reads nothing).
            session.execute(sql.SET_USAGE, {"m": module, "keys": 0, "bytes": 0})
            return Usage(keys - int(expired[0]), used - int(expired[1]))

        return self.writes.run(write)

    def purge_expired(self) -> int:
        """Delete the expired keys of every module; return how many went."""
        now = self.clock()
        with self._reader.connect() as connection:
            modules = connection.execute(sql.EXPIRING_MODULES, {"now": now}).scalars().all()

        def purge(module: str) -> Write[int]:
            return lambda session: _purge(session, module, "", now, self._lock(session, module))[0]

        return sum(self.writes.run(purge(module)) for module in modules)

    def _set(
        self,
        module: str,
        key: str,
        value: Any,
        ttl: float | None,
        if_version: int | None,
        quota_bytes: int,
    ) -> Write[int]:
        check_key(key)
        data = encode(key, value)
        check_version(if_version)
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL
        ):
            raise InvalidValue(
                f"ttl must be a number of seconds above 0, at most {MAX_TTL}: {ttl!r}"
            )

        def write(session: Connection) -> int:
            if len(data) > LARGEST_INLINE and on_loop(session):
                raise Offload
            now = self.clock()
            expires = now + timedelta(seconds=ttl) if ttl is not None else None
            usage, row = self._locked_row(session, module, key)
            current = row[0] if row is not None and _live(row[2], now) else 0
            expect(key, if_version, current)
            old = row[1] if row is not None else None
            _put(session, module, key, data, expires, current, old, quota_bytes, now, usage)
            return current + 1

        return write

    def _incr(self, module: str, key: str, by: int, quota_bytes: int) -> Write[int]:
        check_key(key)
        if isinstance(by, bool) or not isinstance(by, int):
            raise InvalidValue(f"incr's 'by' must be a whole number, not {by!r}")

        def write(session: Connection) -> int:
            now = self.clock()
            usage, row = self._locked_row(session, module, key, value=True)
            live = row is not None and _live(row[2], now)
            if live and row is not None and len(row[3]) > LARGEST_INLINE and on_loop(session):
                raise Offload  # not decoded on the loop
            number = json.loads(row[3]) if live and row is not None else 0
            if isinstance(number, bool) or not isinstance(number, int):
                raise InvalidValue(f"'{key}' does not hold a whole number, so incr cannot add")
            result = number + by
            data = encode(key, result)
            expires, current = (row[2], row[0]) if live and row is not None else (None, 0)
            old = row[1] if row is not None else None
            _put(session, module, key, data, expires, current, old, quota_bytes, now, usage)
            return result

        return write

    def _delete(self, module: str, key: str, if_version: int | None) -> Write[bool]:
        check_key(key)
        check_version(if_version)

        def write(session: Connection) -> bool:
            now = self.clock()
            (keys, used), row = self._locked_row(session, module, key)
            live = row is not None and _live(row[2], now)
            expect(key, if_version, row[0] if live and row is not None else 0)
            if row is None:
                return False
            if not self._postgres:
                sqlite.delete(session, module, key, (keys - 1, used - row[1]))
                return live
            session.execute(sql.DELETE, {"module": module, "key": key})
            params = {"m": module, "keys": keys - 1, "bytes": used - row[1]}
            session.execute(sql.SET_USAGE, params)
            return live

        return write

    def _locked_row(
        self, session: Connection, module: str, key: str, value: bool = False
    ) -> tuple[tuple[int, int], Sequence[Any] | None]:
        """Take the module's usage row; return (keys, bytes) and the key's row if any:
        (version, size, expires_at[, value])."""
        params = {"module": module, "key": key}
        if self._postgres:
            usage = self._lock(session, module)
            return usage, session.execute(sql.ROW_VALUE if value else sql.ROW, params).first()
        return sqlite.locked_row(session, module, key, value)

    def _lock(self, session: Connection, module: str) -> tuple[int, int]:
        """Take the module's usage row (made at its first write); return (keys, bytes)."""
        params = {"module": module}
        for _ in range(2):  # made once, never deleted: found at once or after the insert
            found = session.execute(sql.LOCK, params).first()
            if found is not None:
                return int(found[0]), int(found[1])
            session.execute(sql.MAKE_USAGE[session.dialect.name], params)
        raise RuntimeError(f"the store's usage row of '{module}' vanished")


def _put(
    session: Connection,
    module: str,
    key: str,
    data: str,
    expires: datetime | None,
    current: int,
    old: int | None,
    quota_bytes: int,
    now: datetime,
    usage: tuple[int, int],
) -> None:
    """Write `key` at version `current + 1` within the quota, and the module's usage."""
    keys, used = usage
    size = len(key.encode()) + len(data.encode())
    total = used - (old or 0) + size
    shrinks = current > 0 and old is not None and size <= old  # a live value made smaller
    if total > quota_bytes and not shrinks:
        if on_loop(session):
            raise Offload  # a purge has no bound: the writer thread does it
        # The row counts expired keys until they are purged; the quota does not.
        keys, used = _purge(session, module, key, now, (keys, used))[1:]
        total = used - (old or 0) + size
        if total > quota_bytes:
            live = used - (old or 0) if current == 0 and old is not None else used
            raise QuotaExceeded(
                f"storing '{key}' ({size} bytes) would take the store to {total} bytes, over "
                f"its limit of {quota_bytes} bytes ({quota_bytes / MB:.2f} MB); it holds "
                f"{live} bytes ({live / MB:.2f} MB)"
            )
    values = {"value": data, "size": size, "version": current + 1, "expires_at": expires}
    counts = {"keys": keys + (old is None), "bytes": total}
    if session.dialect.name == "postgresql":
        session.execute(sql.PUT_PG, {"m": module, "k": key, "updated_at": now, **values, **counts})
        return
    sqlite.put(session, module, key, values, now, old is None, counts)


def _purge(
    session: Connection, module: str, keep: str, now: datetime, usage: tuple[int, int]
) -> tuple[int, int, int]:
    """Delete the module's expired keys but `keep`, under its lock; return how many went and
    the usage left."""
    params = {"module": module, "key": keep, "now": now}
    gone = session.execute(sql.GONE_BUT, params).one()
    count, size = int(gone[0]), int(gone[1])
    if count == 0:
        return 0, *usage
    session.execute(sql.DELETE_EXPIRED, params)
    keys, used = usage[0] - count, usage[1] - size
    session.execute(sql.SET_USAGE, {"m": module, "keys": keys, "bytes": used})
    return count, keys, used


def _live(expires: datetime | None, now: datetime) -> bool:
    return expires is None or expires > now
