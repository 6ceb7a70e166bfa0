"""The store's hot statements on SQLite, run on the driver's own connection.

A store call is a few one-row statements; through SQLAlchemy each cost ten times what
SQLite spends on it (25 µs a set in sqlite3, 320 µs through Core, measured in
docs/benchmarks.md). So on SQLite the reads and writes of one key (get, the locked row, the
write and the usage) are plain SQL on the sqlite3 connection of the same SQLAlchemy
connection, inside its transaction. Everything else (lists, purges, the operators' views)
stays on SQLAlchemy. Times are stored as SQLAlchemy stores them on SQLite (UTC,
"YYYY-MM-DD HH:MM:SS.ffffff"), so both read what the other wrote, and compare as text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection

_ROW = 'SELECT u.keys, u.bytes, s.version, s.size, s.expires_at{value} FROM module_store_usage u \
LEFT JOIN module_store s ON s.module = u.module AND s."key" = ? WHERE u.module = ?'
JOINED = {False: _ROW.format(value=""), True: _ROW.format(value=", s.value")}
MAKE_USAGE = "INSERT INTO module_store_usage (module, keys, bytes) VALUES (?, 0, 0) \
ON CONFLICT DO NOTHING"
GET = 'SELECT "key", value, version, expires_at FROM module_store WHERE module = ? AND \
"key" = ? AND (expires_at IS NULL OR expires_at > ?)'
INSERT = 'INSERT INTO module_store (value, size, version, expires_at, updated_at, module, \
"key") VALUES (?, ?, ?, ?, ?, ?, ?)'
UPDATE = 'UPDATE module_store SET value = ?, size = ?, version = ?, expires_at = ?, \
updated_at = ? WHERE module = ? AND "key" = ?'
DELETE = 'DELETE FROM module_store WHERE module = ? AND "key" = ?'
SET_USAGE = "UPDATE module_store_usage SET keys = ?, bytes = ? WHERE module = ?"


def driver(connection: Connection) -> sqlite3.Connection:
    """Return the sqlite3 connection under a SQLAlchemy one (its transaction included)."""
    return cast(sqlite3.Connection, connection.connection.driver_connection)


def stamp(moment: datetime | None) -> str | None:
    """Return a time as SQLAlchemy's DateTime stores it on SQLite."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def moment(text: str | None) -> datetime | None:
    """Return a stored time, in UTC."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def locked_row(
    connection: Connection, module: str, key: str, value: bool
) -> tuple[tuple[int, int], Sequence[Any] | None]:
    """The module's usage and the key's row: (version, size, expires_at[, value]). The
    transaction began with BEGIN IMMEDIATE, so it already holds the write lock."""
    raw = driver(connection)
    for _ in range(2):  # the usage row is made at the module's first write, never deleted
        found = raw.execute(JOINED[value], (key, module)).fetchone()
        if found is not None:
            usage = (int(found[0]), int(found[1]))
            if found[2] is None:
                return usage, None
            return usage, (found[2], found[3], moment(found[4]), *found[5:])
        raw.execute(MAKE_USAGE, (module,))
    raise RuntimeError(f"the store's usage row of '{module}' vanished")


def get(connection: Connection, module: str, key: str, now: datetime) -> Sequence[Any] | None:
    """The live row of `key`: (key, value, version, expires_at), or None."""
    found = driver(connection).execute(GET, (module, key, stamp(now))).fetchone()
    return None if found is None else (found[0], found[1], found[2], moment(found[3]))


def put(
    connection: Connection,
    module: str,
    key: str,
    values: dict[str, Any],
    updated_at: datetime,
    new: bool,
    usage: dict[str, int],
) -> None:
    """Write the key's row (insert when `new`) and the module's usage."""
    raw = driver(connection)
    row = (values["value"], values["size"], values["version"], stamp(values["expires_at"]))
    raw.execute(INSERT if new else UPDATE, (*row, stamp(updated_at), module, key))
    raw.execute(SET_USAGE, (usage["keys"], usage["bytes"], module))


def delete(connection: Connection, module: str, key: str, usage: tuple[int, int]) -> None:
    """Delete the key's row and set the module's usage."""
    raw = driver(connection)
    raw.execute(DELETE, (module, key))
    raw.execute(SET_USAGE, (*usage, module))


class LoopReader:
    """Reads of one key on the event loop itself, for the embedded database: a one-row read
    in WAL mode costs less than the trip to a thread and back. Its own connection, used
    from the loop's thread only, never waits: a busy database (SQLITE_BUSY, as during a
    WAL recovery) or a value too large to decode on the loop sends the read to a thread."""

    LARGEST = 64 * 1024  # characters of JSON decoded on the loop; larger ones in a thread

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def get(self, module: str, key: str, now: datetime) -> tuple[bool, Sequence[Any] | None]:
        """Return (read, row): `row` as `get` returns it (its value still JSON text), or
        read False when the read must go to a thread."""
        if self._connection is None:
            self._connection = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA query_only=ON")
        try:
            found = self._connection.execute(GET, (module, key, stamp(now))).fetchone()
        except sqlite3.OperationalError:
            return False, None
        if found is None:
            return True, None
        if len(found[1]) > self.LARGEST:
            return False, None
        return True, (found[0], found[1], found[2], moment(found[3]))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
