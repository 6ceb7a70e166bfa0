"""The registry's read cache: the module list's pages and the modules' details as the API
serves them (JSON bytes), dropped whole on every registry change.

A change drops it at once on the node that made it (after the commit), on every other
node when its notification arrives (PostgreSQL LISTEN/NOTIFY), and at the latest when
the fingerprint poll sees the registry move: a cached answer is never older than what the
route table serves. Each entry remembers the generation it was read in; an answer read
before a drop is not kept after it, so a read that raced a change cannot outlive it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from pydantic import BaseModel

MAX_BYTES = 32 * 1024 * 1024  # about 10,000 details of a typical manifest
# What an entry costs beyond its answer's bytes (its key, up to a 200-character search
# text, and the dict's slot), counted so that answers of a few bytes or none (a list
# order that matched nothing) cannot pile up without bound: at most 131,072 entries.
ENTRY_OVERHEAD = 256


def to_json(shape: BaseModel) -> bytes:
    """Return `shape` as the API's JSON responses render it (FastAPI's JSONResponse)."""
    return encode(shape.model_dump(mode="json"))


def encode(content: Any) -> bytes:
    """Return `content` rendered as FastAPI's JSONResponse renders it."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


Answer = tuple[bytes, ...]  # an answer's JSON, in pieces a request completes


class ReadCache:
    """A thread-safe LRU of serialized answers, at most `max_bytes` of them, with a
    generation that moves on every drop."""

    def __init__(self, max_bytes: int = MAX_BYTES, entry_overhead: int = ENTRY_OVERHEAD) -> None:
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Answer] = OrderedDict()
        self._bytes = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Answer | None:
        """Return the answer kept under `key`, or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, answer: Answer, generation: int) -> None:
        """Keep `answer` under `key` unless the cache was dropped since `generation` (its
        value before the read began): the read may predate a change."""
        size = self._size(answer)
        if size > self.max_bytes:
            return
        with self._lock:
            if generation != self.generation:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._entries[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self._size(dropped)

    def invalidate(self) -> None:
        """Drop every answer: the registry changed (safe from any thread)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _size(self, answer: Answer) -> int:
        return self.entry_overhead + sum(len(piece) for piece in answer)
