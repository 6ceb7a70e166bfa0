"""What modules print: read in bounded lines, kept in a bounded ring per module, and passed
on to the server's own log at a bounded rate.

A worker's stderr (its `print()` output, its logger, its tracebacks) is untrusted: a
handler may print a line of gigabytes or millions of lines. Nothing here ever holds more
than one read chunk plus one cut line per worker, and one ring per module.

Each kept line also goes to the output's `sink` when one is set (the node's `LogShipper`,
which writes it to the database for every node to answer: `cluster/logs.py`).
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, overload

log = logging.getLogger("modhub.sandbox")

READ_CHUNK = 64 * 1024
MARK_BYTES = 40  # room for " … [truncated N bytes]" after a cut line
WORKER = "stderr"  # the stream of a worker's own output (its print() goes there too)
MODHUB = "modhub"  # the stream of what modhub notes in a module's log


class Sink(Protocol):
    """Takes each line a module's log keeps (cut to the line bound), as it is kept."""

    def __call__(self, module: str, line: str, stream: str, request_id: str | None) -> None: ...


@dataclass(frozen=True)
class OutputLimits:
    """Bounds on module output."""

    max_line_bytes: int = 16 * 1024  # longer lines are cut, with a mark saying how much
    max_log_bytes: int = 1024 * 1024  # the ring kept per module (UTF-8 bytes of its lines)
    max_log_lines: int = 10_000  # and at most this many lines, however short
    server_log_rate: float = 8 * 1024  # bytes per second per module into the server's log
    server_log_burst: int = 64 * 1024  # bytes a quiet module may send at once


# Control characters would reach terminals (escape sequences) and JSON (six bytes each).
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}


def _text(kept: bytearray, dropped: int) -> str:
    line = kept.decode(errors="replace").rstrip().translate(_CONTROLS)
    return f"{line} … [truncated {dropped} bytes]" if dropped else line


class LineCutter:
    """Splits a byte stream fed in chunks into lines cut to `max_line_bytes`, with a mark.

    The part of a line past the bound is dropped as it arrives: a line of any length
    costs at most one chunk plus `max_line_bytes`.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.kept = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[str]:
        """Return the lines that `chunk` completes."""
        lines: list[str] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            room = self.max_line_bytes - len(self.kept)
            if stop - start > room:
                self.kept += chunk[start : start + room]
                self.dropped += stop - start - room
            else:
                self.kept += chunk[start:stop]
            if end < 0:
                return lines
            lines.append(_text(self.kept, self.dropped))
            self.kept, self.dropped = bytearray(), 0
            start = end + 1

    def flush(self) -> list[str]:
        """Return the last line, when the stream did not end with a newline."""
        if not (self.kept or self.dropped):
            return []
        line = _text(self.kept, self.dropped)
        self.kept, self.dropped = bytearray(), 0
        return [line]


async def read_lines(stream: asyncio.StreamReader, max_line_bytes: int) -> AsyncIterator[str]:
    """Yield the stream's lines, each cut to `max_line_bytes` with a truncation mark."""
    cutter = LineCutter(max_line_bytes)
    while chunk := await stream.read(READ_CHUNK):
        for line in cutter.feed(chunk):
            yield line
    for line in cutter.flush():
        yield line


def read_lines_sync(stream: io.BufferedIOBase, max_line_bytes: int) -> Iterator[str]:
    """Yield a blocking binary stream's lines, each cut to `max_line_bytes`, as above."""
    cutter = LineCutter(max_line_bytes)
    while chunk := stream.read1(READ_CHUNK):
        yield from cutter.feed(chunk)
    yield from cutter.flush()


def clip(line: str, max_bytes: int) -> str:
    """Return `line` cut to `max_bytes` of UTF-8 and marked, unless it fits with a mark."""
    data = line.encode()
    if len(data) <= max_bytes + MARK_BYTES:
        return line
    return _text(bytearray(data[:max_bytes]), len(data) - max_bytes)


class ModuleLog(Sequence[str]):
    """The last lines of one module's output: at most `max_bytes` of UTF-8 and `max_lines`.

    Appended on the event loop, read from request threads: every access holds a lock.
    """

    def __init__(
        self,
        max_bytes: int = OutputLimits.max_log_bytes,
        max_lines: int = OutputLimits.max_log_lines,
        max_line_bytes: int = OutputLimits.max_line_bytes,
        *,
        module: str = "",
        sink: Callable[[], Sink | None] = lambda: None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_line_bytes = min(max_line_bytes, max_bytes)
        self.module = module
        self._sink = sink
        self._lines: collections.deque[str] = collections.deque()
        self._sizes: collections.deque[int] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def append(self, line: str, stream: str = MODHUB, request_id: str | None = None) -> None:
        """Add a line (cut to the line bound), dropping the oldest past the bounds.

        `stream` says who wrote it: the worker (`WORKER`) or modhub (`MODHUB`, the
        default); `request_id` the call it belongs to, when known."""
        line = clip(line, self.max_line_bytes)
        size = len(line.encode()) + 1  # with its newline
        with self._lock:
            self._lines.append(line)
            self._sizes.append(size)
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._lines) > self.max_lines:
                self._lines.popleft()
                self._bytes -= self._sizes.popleft()
        sink = self._sink()
        if sink is not None:
            sink(self.module, line, stream, request_id)

    @property
    def size(self) -> int:
        """Return the bytes kept (UTF-8 lines with their newlines)."""
        return self._bytes

    def tail(self, limit: int) -> list[str]:
        """Return the last `limit` lines, oldest first."""
        with self._lock:
            start = max(0, len(self._lines) - limit)
            return [self._lines[i] for i in range(start, len(self._lines))] if limit else []

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._lines))

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        with self._lock:
            if isinstance(index, slice):
                return list(self._lines)[index]
            return self._lines[index]


@dataclass
class _Gate:
    """A token bucket in bytes, and the lines it held back since it last let one through."""

    tokens: float
    stamp: float
    suppressed: int = 0


class Logs(dict[str, ModuleLog]):
    """Each module's `ModuleLog`, made on first use (as a defaultdict would, knowing its
    module's name)."""

    def __init__(self, make: Callable[[str], ModuleLog]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, module: str) -> ModuleLog:
        kept = self[module] = self._make(module)
        return kept


@dataclass
class ModuleOutput:
    """Every module's kept log, and the gate from module output to the server's own log."""

    limits: OutputLimits = field(default_factory=OutputLimits)
    clock: Callable[[], float] = time.monotonic
    logs: Logs = field(init=False)
    sink: Sink | None = None  # also given every kept line (the node's database writer)
    _gates: dict[str, _Gate] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        limits = self.limits
        self.logs = Logs(
            lambda module: ModuleLog(
                limits.max_log_bytes,
                limits.max_log_lines,
                limits.max_line_bytes,
                module=module,
                sink=lambda: self.sink,
            )
        )

    async def read(
        self,
        stream: asyncio.StreamReader,
        module: str,
        key: str,
        request: Callable[[], str | None] = lambda: None,
    ) -> None:
        """Keep and forward every line of a worker's output (`key` is name@version);
        `request` says which call a line belongs to when that is known."""
        async for line in read_lines(stream, self.limits.max_line_bytes):
            self.add(module, key, line, request())

    def add(self, module: str, key: str, line: str, request_id: str | None = None) -> None:
        """Keep a line of `module`'s output; log it on the server if its rate allows."""
        self.logs[module].append(line, WORKER, request_id)
        if self._admit(module, len(line.encode()) + 1):
            log.info("[%s] %s", key, line)

    def _admit(self, module: str, cost: int) -> bool:
        burst = self.limits.server_log_burst
        now = self.clock()
        gate = self._gates.get(module)
        if gate is None:
            gate = self._gates[module] = _Gate(tokens=burst, stamp=now)
        gate.tokens = min(burst, gate.tokens + (now - gate.stamp) * self.limits.server_log_rate)
        gate.stamp = now
        cost = min(cost, burst)
        if gate.tokens < cost:
            gate.suppressed += 1
            return False
        gate.tokens -= cost
        if gate.suppressed:
            log.warning(
                "[%s] %d lines of its output suppressed here (over %d bytes/s);"
                " its log keeps the latest",
                module,
                gate.suppressed,
                int(self.limits.server_log_rate),
            )
            gate.suppressed = 0
        return True
