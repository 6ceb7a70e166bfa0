"""Each module's own key-value store, in the platform's database.

Keys belong to a module *name*, so data outlives upgrades, rollbacks and restarts. Every
write of one module takes that module's usage row first (`SELECT … FOR UPDATE` on
PostgreSQL, `BEGIN IMMEDIATE` on SQLite): a module's writes are ordered, so `incr` and
`if_version` need no retry loop, and the usage kept in that row is exact. Expired keys are
invisible at once and deleted by `purge_expired`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from modhub.db import Database
from modhub.db.models import StoredValue, StoreUsage, utcnow
from modhub.store.errors import (
    InvalidKey,
    InvalidValue,
    QuotaExceeded,
    ValueTooLarge,
    VersionConflict,
)

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_STORAGE_MB = 64
MAX_PAGE = 1000
MB = 1024 * 1024

_S = StoredValue.__table__.c
_U = StoreUsage.__table__.c
_LIVE = or_(_S.expires_at.is_(None), _S.expires_at > bindparam("now"))
_GET = select(_S.key, _S.value, _S.version, _S.expires_at).where(
    _S.module == bindparam("module"), _S.key == bindparam("key"), _LIVE
)
_ROW = select(_S.version, _S.size, _S.expires_at, _S.value).where(
    _S.module == bindparam("module"), _S.key == bindparam("key")
)
_USAGE = select(_U["keys"], _U.bytes).where(_U.module == bindparam("module"))
_INSERT = insert(StoredValue)
_UPDATE = update(StoredValue).where(_S.module == bindparam("m"), _S.key == bindparam("k"))
_SET_USAGE = update(StoreUsage).where(_U.module == bindparam("m"))


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
        # Core connections, not ORM sessions: a set is four statements, and a session's
        # overhead doubled it. SQLite's writes start with BEGIN IMMEDIATE (db/database.py).
        self._writer = db.engine.execution_options(immediate=True)

    # -- reading -----------------------------------------------------------------------------

    def get_entry(self, module: str, key: str) -> Entry | None:
        """Return the live entry of `key`, or None."""
        _check_key(key)
        with self.db.query() as connection:
            row = connection.execute(_GET, {"module": module, "key": key, "now": self.clock()})
            found = row.first()
        return None if found is None else Entry(found[0], json.loads(found[1]), *found[2:])

    def list(
        self, module: str, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Return up to `limit` live entries whose keys start with `prefix`, in key order."""
        if not isinstance(prefix, str):
            raise InvalidValue("the prefix must be a string")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidValue(f"limit must be a whole number from 1 to {MAX_PAGE}")
        after = _decode_cursor(cursor) if cursor is not None else None
        query = (
            select(_S.key, _S.value, _S.version, _S.expires_at)
            .where(_S.module == module, _LIVE)
            .order_by(_S.key)
            .limit(limit + 1)
        )
        if prefix:
            query = query.where(_S.key >= prefix, func.substr(_S.key, 1, len(prefix)) == prefix)
        if after is not None:
            query = query.where(_S.key > after)
        with self.db.query() as connection:
            rows = connection.execute(query, {"now": self.clock()}).all()
        items = [Entry(r[0], json.loads(r[1]), r[2], r[3]) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, _encode_cursor(items[-1].key) if more else None)

    def usage(self, module: str) -> Usage:
        """Return how many keys and bytes the module keeps (expired keys until purged)."""
        with self.db.query() as connection:
            found = connection.execute(_USAGE, {"module": module}).first()
        return Usage(0, 0) if found is None else Usage(found[0], found[1])

    # -- writing -----------------------------------------------------------------------------

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
        """Store `value` under `key`; return its new version."""
        _check_key(key)
        data = _encode(key, value)
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf
        ):
            raise InvalidValue(f"ttl must be a positive number of seconds, not {ttl!r}")
        with self._writer.begin() as session:
            now = self.clock()
            expires = now + timedelta(seconds=ttl) if ttl is not None else None
            return self._put(session, module, key, data, expires, if_version, quota_bytes, now)

    def incr(self, module: str, key: str, by: int = 1, *, quota_bytes: int) -> int:
        """Add `by` to the integer under `key` (absent or expired: 0); return the result."""
        _check_key(key)
        if isinstance(by, bool) or not isinstance(by, int):
            raise InvalidValue(f"incr takes a whole number, not {by!r}")
        with self._writer.begin() as session:
            now = self.clock()
            usage = _lock(session, module)
            row = session.execute(_ROW, {"module": module, "key": key}).first()
            current = 0
            if row is not None and _live(row[2], now):
                current = json.loads(row[3])
                if isinstance(current, bool) or not isinstance(current, int):
                    raise InvalidValue(f"'{key}' does not hold a whole number")
            result = current + by
            expires = row[2] if row is not None and _live(row[2], now) else None
            self._put(
                session, module, key, json.dumps(result), expires, None, quota_bytes, now, usage
            )
            return result

    def delete(self, module: str, key: str, *, if_version: int | None = None) -> bool:
        """Delete `key`; return whether it existed (live)."""
        _check_key(key)
        with self._writer.begin() as session:
            now = self.clock()
            keys, used = _lock(session, module)
            row = session.execute(_ROW, {"module": module, "key": key}).first()
            live = row is not None and _live(row[2], now)
            _expect(key, if_version, row[0] if live and row is not None else 0)
            if row is None:
                return False
            session.execute(delete(StoredValue).where(_S.module == module, _S.key == key))
            session.execute(
                update(StoreUsage)
                .where(_U.module == module)
                .values(keys=keys - 1, bytes=used - row[1])
            )
            return live

    def drop(self, module: str) -> Usage:
        """Delete every key of `module`; return what went."""
        with self._writer.begin() as session:
            keys, used = _lock(session, module)
            session.execute(delete(StoredValue).where(_S.module == module))
            session.execute(delete(StoreUsage).where(_U.module == module))
        return Usage(keys, used)

    def purge_expired(self) -> int:
        """Delete the expired keys of every module; return how many went."""
        now = self.clock()
        with self.db.query() as connection:
            modules = (
                connection.execute(select(_S.module).where(_S.expires_at <= now).distinct())
                .scalars()
                .all()
            )
        purged = 0
        for module in modules:
            with self._writer.begin() as session:
                keys, used = _lock(session, module)
                expired = _S.module == module, _S.expires_at <= now
                gone = session.execute(
                    select(func.count(), func.coalesce(func.sum(_S.size), 0)).where(*expired)
                ).one()
                session.execute(delete(StoredValue).where(*expired))
                session.execute(
                    update(StoreUsage)
                    .where(_U.module == module)
                    .values(keys=keys - gone[0], bytes=used - gone[1])
                )
                purged += gone[0]
        return purged

    def _put(
        self,
        session: Connection,
        module: str,
        key: str,
        data: str,
        expires: datetime | None,
        if_version: int | None,
        quota_bytes: int,
        now: datetime,
        usage: tuple[int, int] | None = None,
    ) -> int:
        keys, used = usage if usage is not None else _lock(session, module)
        row = session.execute(_ROW, {"module": module, "key": key}).first()
        live = row is not None and _live(row[2], now)
        current = row[0] if live and row is not None else 0
        _expect(key, if_version, current)
        size = len(key.encode()) + len(data.encode())
        old = row[1] if row is not None else 0
        total = used - old + size
        if total > quota_bytes and size > old:
            raise QuotaExceeded(
                f"storing '{key}' would take the store to {total} bytes, over its limit of "
                f"{quota_bytes} bytes ({quota_bytes / MB:.2f} MB); it holds {used} bytes "
                f"({used / MB:.2f} MB) in {keys} keys"
            )
        values = {"value": data, "size": size, "version": current + 1, "expires_at": expires}
        if row is None:
            session.execute(_INSERT, {"module": module, "key": key, "updated_at": now, **values})
        else:
            session.execute(_UPDATE, {"m": module, "k": key, "updated_at": now, **values})
        session.execute(_SET_USAGE, {"m": module, "keys": keys + (row is None), "bytes": total})
        return current + 1


def _lock(session: Connection, module: str) -> tuple[int, int]:
    """Take the module's usage row (made on its first write); return (keys, bytes)."""
    dialect = session.dialect.name
    make = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(StoreUsage)
    session.execute(make.values(module=module, keys=0, bytes=0).on_conflict_do_nothing())
    found = session.execute(_USAGE.with_for_update(), {"module": module}).one()
    return int(found[0]), int(found[1])


def _live(expires: datetime | None, now: datetime) -> bool:
    return expires is None or expires > now


def _expect(key: str, if_version: int | None, current: int) -> None:
    if if_version is None:
        return
    if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0:
        raise InvalidValue(f"if_version must be a whole number >= 0, not {if_version!r}")
    if if_version != current:
        state = "is absent" if current == 0 else f"is at version {current}"
        raise VersionConflict(f"'{key}' {state}, not at version {if_version}")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"a key is a non-empty string, not {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8")
    if "\x00" in key:
        raise InvalidKey("a key may not contain NUL")


def _encode(key: str, value: Any) -> str:
    try:
        data = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"the value of '{key}' is not JSON: {exc}") from None
    size = len(data.encode())
    if size > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"the value of '{key}' is {size} bytes as JSON, over the {MAX_VALUE_BYTES} allowed"
        )
    return data


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_cursor(cursor: Any) -> str:
    try:
        return base64.urlsafe_b64decode(str(cursor).encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidValue(f"cursor {cursor!r} is not one this store gave") from None
