"""Bounds on module output: each line, each module's kept log, and the server's own log.

The attack: a handler printed 200 lines of 15 MiB; the server kept them all (3.3 GB) and
wrote them all to its stderr. Here a real module prints huge and many lines through a real
worker, and the bounds are checked by the bytes kept and forwarded, never by time: the
server-log gate runs on a clock the test moves.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest

from modhub.sandbox import WorkerPool
from modhub.sandbox.output import ModuleLog, ModuleOutput, OutputLimits, read_lines
from tests.sandbox.conftest import ATTACKS, Sandbox, answer_json, wait_until, with_pool
from tests.sandbox.test_pool import RssPeak

LIMITS = OutputLimits()
KIB, MIB = 1024, 1024 * 1024


class Forwarded(logging.Handler):
    """Counts what reaches the server's log from module output (messages, not kept)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = 0
        self.bytes = 0
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "suppressed" in message:
            self.notes.append(message)
        elif message.startswith("["):  # a module's line, not the pool's own messages
            self.lines += 1
            self.bytes += len(message.split("] ", 1)[1].encode()) + 1  # the line, newline


@pytest.fixture
def forwarded() -> Iterator[Forwarded]:
    """Capture the `modhub.sandbox` logger at INFO, as `modhub serve` prints it."""
    logger = logging.getLogger("modhub.sandbox")
    handler, level = Forwarded(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines_of(*chunks: bytes, max_line_bytes: int = 16) -> list[str]:
    """Return what `read_lines` yields for a stream that delivers `chunks` then EOF."""

    async def main() -> list[str]:
        stream = asyncio.StreamReader()
        for chunk in chunks:
            stream.feed_data(chunk)
        stream.feed_eof()
        return [line async for line in read_lines(stream, max_line_bytes)]

    return asyncio.run(main())


# -- lines ---------------------------------------------------------------------------------


def test_long_lines_are_cut_with_a_mark_and_the_next_line_survives() -> None:
    assert lines_of(b"short\n" + b"x" * 40 + b"\nnext\n") == [
        "short",
        "x" * 16 + " … [truncated 24 bytes]",
        "next",
    ]


def test_a_line_split_across_chunks_is_cut_once() -> None:
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10 + b"\nend"]
    assert lines_of(*chunks) == ["a" * 10 + "b" * 6 + " … [truncated 14 bytes]", "end"]


def test_control_characters_never_reach_a_terminal() -> None:
    (line,) = lines_of(b"red \x1b[31mtext\r\x07 tab\there\n", max_line_bytes=100)
    assert line == "red \ufffd[31mtext\ufffd\ufffd tab\there"


# -- the ring ------------------------------------------------------------------------------


def test_the_ring_keeps_the_latest_lines_within_its_bytes_and_lines() -> None:
    ring = ModuleLog(max_bytes=100, max_lines=5, max_line_bytes=40)
    for i in range(20):
        ring.append(f"line {i:02d}")  # 8 characters and a newline: 9 bytes
    assert list(ring) == [f"line {i:02d}" for i in range(15, 20)]
    ring.append("y" * 90)
    assert ring[-1] == "y" * 40 + " … [truncated 50 bytes]"
    assert ring.size <= 100
    assert ring.tail(2) == [ring[-2], ring[-1]]


# -- a real module -------------------------------------------------------------------------


def test_huge_lines_are_cut_and_kept_within_the_ring(
    sandbox: Sandbox, forwarded: Forwarded
) -> None:
    # 20 lines of 15 MiB, 300 MB through the pipe: the old pool kept them all, and logged
    # them all. (Assertions compare sizes and counts: a failure must not print 300 MB.)
    runtime = sandbox.runtime("shouter", timeout_ms=120_000)
    peak = RssPeak()

    async def body(pool: WorkerPool) -> None:
        pool.output.clock = Clock()  # frozen: the server-log gate never refills
        with peak:
            answer = await answer_json(
                pool, runtime, f"{ATTACKS}:huge_lines", query={"count": "20", "mib": "15"}
            )
            assert answer == {"printed": 20 * (15 * MIB + 1)}
            await wait_until(
                lambda: "after the huge lines" in pool.logs["shouter"], 60, "the whole output"
            )
        kept = list(pool.logs["shouter"])
        cut = "z" * LIMITS.max_line_bytes + f" … [truncated {15 * MIB - 16 * KIB} bytes]"
        assert sum(line == cut for line in kept) == 20
        assert max(len(line.encode()) for line in kept) == len(cut.encode())
        assert pool.logs["shouter"].size <= LIMITS.max_log_bytes

        # The server's log got at most the gate's burst; the rest was counted, and the
        # count printed when a line got through again (the short last one).
        assert forwarded.bytes <= LIMITS.server_log_burst
        (note,) = forwarded.notes
        match = re.search(r"\[shouter\] (\d+) lines of its output suppressed", note)
        assert match, note
        assert int(match[1]) >= 17
        assert int(match[1]) + forwarded.lines == 21

    with_pool(sandbox, body)
    assert peak.growth < 64 * MIB, f"RSS grew by {peak.growth / MIB:.0f} MB"


def test_many_lines_keep_a_bounded_tail(sandbox: Sandbox, forwarded: Forwarded) -> None:
    runtime = sandbox.runtime("flooder", timeout_ms=60_000)
    clock = Clock()
    count = 200_000  # 5.4 MB of short lines

    async def body(pool: WorkerPool) -> None:
        pool.output.clock = clock
        assert await answer_json(
            pool, runtime, f"{ATTACKS}:many_lines", query={"count": str(count)}
        ) == {"printed": count}
        last = f"line {count - 1:07d} of the flood"
        await wait_until(lambda: pool.logs["flooder"][-1] == last, 30, "the last line")
        kept = list(pool.logs["flooder"])
        assert len(kept) == LIMITS.max_log_lines
        first = count - LIMITS.max_log_lines
        assert kept == [f"line {i:07d} of the flood" for i in range(first, count)], kept[:3]
        assert pool.logs["flooder"].size <= LIMITS.max_log_bytes
        assert forwarded.bytes <= LIMITS.server_log_burst

    with_pool(sandbox, body)


def test_the_gate_refills_at_its_rate_per_module(forwarded: Forwarded) -> None:
    clock = Clock()
    output = ModuleOutput(OutputLimits(server_log_rate=100, server_log_burst=1000), clock)
    line = "x" * 99  # 100 bytes with its newline
    for _ in range(30):
        output.add("a", "a@1.0.0", line)
    output.add("b", "b@1.0.0", line)  # another module has its own gate
    assert forwarded.lines == 11
    clock.now += 2.5  # 250 bytes: two lines
    for _ in range(5):
        output.add("a", "a@1.0.0", line)
    assert forwarded.lines == 13
    assert len(forwarded.notes) == 1
    assert "[a] 20 lines of its output suppressed" in forwarded.notes[0]
    assert len(output.logs["a"]) == 35  # the module's own log keeps every line
