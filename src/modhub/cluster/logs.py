"""Module logs in the database: every node's share of a module's output, read on any node.

Each line a module's log keeps (`sandbox/output.py`: already cut to 16 KiB) also reaches
this node's `LogShipper`, which holds it in a bounded buffer per module and writes the
buffers in one transaction every `FLUSH_SECONDS`, in a thread (never a write per line,
never on the event loop). A module that prints faster than a buffer holds loses its
oldest unwritten lines, and a line saying how many takes their place. After a flush the
modules written are trimmed to the `module_log_lines` and `module_log_bytes` settings
once they passed a quarter of either (or `TRIM_SECONDS` went by); lines of modules no
longer registered go every `SWEEP_SECONDS`. `tail` answers the last lines of every node
with this node's own lines not yet written.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select

from modhub.db import Database
from modhub.db.models import Module, ModuleLogLine, utcnow
from modhub.sandbox.output import MODHUB

log = logging.getLogger("modhub.cluster")

FLUSH_SECONDS = 0.5
BUFFER_LINES = 1_000  # a module's lines held between two flushes; past them the oldest go
BUFFER_BYTES = 1024 * 1024  # and their bytes
TRIM_SECONDS = 30.0  # a module written since is trimmed at the next flush at the latest
SWEEP_SECONDS = 600.0  # lines of modules no longer registered are deleted this often
T = ModuleLogLine


@dataclass(frozen=True)
class LogEntry:
    """One line of a module's log and where it came from."""

    line: str
    node: str
    stream: str
    at: datetime
    request_id: str | None
    seq: int  # the node's count of the lines it shipped

    @property
    def size(self) -> int:
        """Return its UTF-8 bytes with a newline (what the bounds count)."""
        return len(self.line.encode()) + 1


@dataclass
class _Buffer:
    lines: collections.deque[LogEntry] = field(default_factory=collections.deque)
    bytes: int = 0
    dropped: int = 0
    dropped_at: datetime | None = None  # the time of the newest line dropped


@dataclass
class _Written:
    lines: int = 0
    bytes: int = 0
    since: float = 0.0


class LogShipper:
    """This node's module log lines on their way to the database, and reads of them."""

    def __init__(
        self,
        db: Database,
        node: str,
        *,
        max_lines: int,
        max_bytes: int,
        buffer_lines: int = BUFFER_LINES,
        buffer_bytes: int = BUFFER_BYTES,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.node = node
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.buffer_lines = buffer_lines
        self.buffer_bytes = buffer_bytes
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time (the loop's, shutdown's)
        self._pending: dict[str, _Buffer] = {}
        self._writing: dict[str, list[LogEntry]] = {}  # taken by a flush, not committed
        self._seq = 0
        self._written: dict[str, _Written] = {}
        self._swept = monotonic()

    # -- writing ---------------------------------------------------------------------------

    def add(self, module: str, line: str, stream: str, request_id: str | None) -> None:
        """Hold a line of `module`'s log until the next flush (any thread; cheap)."""
        with self._lock:
            self._seq += 1
            entry = LogEntry(
                line, self.node, stream, self.clock(), (request_id or "")[:64] or None, self._seq
            )
            buffer = self._pending.setdefault(module, _Buffer())
            buffer.lines.append(entry)
            buffer.bytes += entry.size
            while len(buffer.lines) > self.buffer_lines or buffer.bytes > self.buffer_bytes:
                gone = buffer.lines.popleft()
                buffer.bytes -= gone.size
                buffer.dropped += 1
                buffer.dropped_at = gone.at

    def flush(self) -> int:
        """Write every held line in one transaction, then trim what grew; return how many
        lines were written. On a database error the lines are held again (bounded)."""
        with self._flushing:
            batch = self._take()
            if not batch:
                return 0
            rows = [_row(module, e) for module, entries in batch.items() for e in entries]
            try:
                with self.db.write() as session:
                    session.execute(insert(T), rows)
            except Exception:
                self._give_back(batch)
                raise
            finally:
                with self._lock:
                    self._writing = {}
            self._note_written(batch)
            self.trim(self._due())
            if self.monotonic() - self._swept >= SWEEP_SECONDS:
                self.sweep()
            return len(rows)

    def _take(self) -> dict[str, list[LogEntry]]:
        with self._lock:
            pending, self._pending = self._pending, {}
            batch: dict[str, list[LogEntry]] = {}
            for module, buffer in pending.items():
                entries = list(buffer.lines)
                if buffer.dropped:  # in their place: before the lines kept
                    self._seq += 1
                    entries.insert(
                        0,
                        LogEntry(
                            f"modhub: {buffer.dropped} lines of output were dropped on this"
                            f" node before they were stored (over {self.buffer_lines} lines"
                            f" or {self.buffer_bytes} bytes in {FLUSH_SECONDS} s)",
                            self.node,
                            MODHUB,
                            buffer.dropped_at or self.clock(),
                            None,
                            self._seq,
                        ),
                    )
                batch[module] = entries
            self._writing = batch
            return batch

    def _give_back(self, batch: dict[str, list[LogEntry]]) -> None:
        with self._lock:
            for module, entries in batch.items():
                buffer = self._pending.setdefault(module, _Buffer())
                for entry in reversed(entries):  # older than what arrived meanwhile
                    if (
                        len(buffer.lines) >= self.buffer_lines
                        or buffer.bytes + entry.size > self.buffer_bytes
                    ):
                        buffer.dropped += 1
                        buffer.dropped_at = max(buffer.dropped_at or entry.at, entry.at)
                        continue
                    buffer.lines.appendleft(entry)
                    buffer.bytes += entry.size

    def _note_written(self, batch: dict[str, list[LogEntry]]) -> None:
        now = self.monotonic()
        for module, entries in batch.items():
            written = self._written.setdefault(module, _Written(since=now))
            written.lines += len(entries)
            written.bytes += sum(e.size for e in entries)

    def _due(self) -> list[str]:
        now = self.monotonic()
        return [
            module
            for module, w in self._written.items()
            if w.lines * 4 >= self.max_lines
            or w.bytes * 4 >= self.max_bytes
            or now - w.since >= TRIM_SECONDS
        ]

    def trim(self, modules: Iterable[str]) -> int:
        """Delete the oldest lines of each of `modules` past the bounds; return how many."""
        deleted = 0
        for module in modules:
            self._written.pop(module, None)
            numbered = _numbered(module)
            cut = (
                select(numbered.c.at, numbered.c.id)
                .where(or_(numbered.c.n > self.max_lines, numbered.c.running > self.max_bytes))
                .order_by(numbered.c.at.desc(), numbered.c.id.desc())
                .limit(1)
            )
            with self.db.write() as session:
                oldest_gone = session.execute(cut).first()
                if oldest_gone is not None:
                    at, row_id = oldest_gone
                    result = session.execute(
                        delete(T).where(
                            T.module == module,
                            or_(T.at < at, and_(T.at == at, T.id <= row_id)),
                        )
                    )
                    deleted += result.rowcount  # type: ignore[attr-defined]
        return deleted

    def sweep(self) -> int:
        """Delete the lines of modules no longer registered; return how many."""
        self._swept = self.monotonic()
        with self.db.write() as session:
            result = session.execute(delete(T).where(T.module.not_in(select(Module.name))))
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        """Flush every `interval` until cancelled (the database work in a thread)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:  # a database hiccup: the lines wait for the next flush
                log.exception("writing module log lines failed")

    # -- reading ---------------------------------------------------------------------------

    def tail(self, module: str, limit: int, max_bytes: int) -> list[LogEntry]:
        """Return the last `limit` lines of `module` from every node, oldest first, at most
        `max_bytes` of them: the database's and this node's not written yet."""
        with self._lock:  # first: a flush committing meanwhile puts them in both (deduped)
            local = list(self._writing.get(module, ()))
            buffer = self._pending.get(module)
            if buffer is not None:
                local.extend(buffer.lines)
        numbered = _numbered(module)
        oldest = (
            select(numbered.c.at, numbered.c.id)
            .where(numbered.c.n <= limit, numbered.c.running <= max_bytes)
            .order_by(numbered.c.at, numbered.c.id)
            .limit(1)
        )
        stored: list[LogEntry] = []
        with self.db.query() as connection:
            first = connection.execute(oldest).first()
            if first is not None:
                at, row_id = first
                rows = connection.execute(
                    select(T.line, T.node, T.stream, T.at, T.request_id, T.seq)
                    .where(T.module == module, or_(T.at > at, and_(T.at == at, T.id >= row_id)))
                    .order_by(T.at, T.id)
                )
                stored = [_entry(row._mapping) for row in rows]
        seen = {(e.node, e.seq) for e in stored}
        merged = sorted(
            stored + [e for e in local if (e.node, e.seq) not in seen], key=lambda e: e.at
        )
        kept: list[LogEntry] = []
        total = 0
        for entry in reversed(merged):
            total += entry.size
            if len(kept) >= limit or total > max_bytes:
                break
            kept.append(entry)
        kept.reverse()
        return kept


def _numbered(module: str) -> Any:
    """Return `module`'s lines newest first with their rank and running bytes."""
    newest_first = (T.at.desc(), T.id.desc())
    return (
        select(
            T.at,
            T.id,
            func.row_number().over(order_by=newest_first).label("n"),
            func.sum(T.size).over(order_by=newest_first).label("running"),
        )
        .where(T.module == module)
        .subquery()
    )


def _row(module: str, entry: LogEntry) -> dict[str, Any]:
    return {
        "module": module,
        "node": entry.node,
        "seq": entry.seq,
        "stream": entry.stream,
        "at": entry.at,
        "request_id": entry.request_id,
        "size": entry.size,
        "line": entry.line,
    }


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        line=row["line"],
        node=row["node"],
        stream=row["stream"],
        at=row["at"],
        request_id=row["request_id"],
        seq=row["seq"],
    )
