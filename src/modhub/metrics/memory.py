"""Live module workers and their memory, sampled: each process sets its own gauges (the
multi-process mode adds the processes up), at each scrape and every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from modhub.metrics import instruments as m
from modhub.metrics.record import state

log = logging.getLogger("modhub.metrics")
PROC = Path("/proc")
PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_TREE = 4096  # processes walked under one worker (its sandbox caps them far lower)

# A worker as the sampler sees it: its module, and its process id.
Live = Callable[[], Iterable[tuple[str, int]]]


def tree(pid: int) -> set[int]:
    """Return `pid` and every process below it (gone ones are skipped)."""
    found, todo = {pid}, [pid]
    while todo and len(found) < MAX_TREE:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in (PROC / str(parent) / "task").iterdir():
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        todo.append(int(child))
    return found


def resident_bytes(pids: Iterable[int]) -> int:
    """Return the resident memory of `pids` together (a gone one counts 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE
    return total


class WorkerSampler:
    """Sets `modhub_workers` and `modhub_worker_memory_bytes` from the live workers."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self._seen: set[str] = set()

    def sample(self, workers: Iterable[tuple[str, int]] | None = None) -> None:
        """Set both gauges for every module with workers now (`workers`, else the live
        ones), and 0 for modules whose workers are gone since the last sample."""
        if not state.enabled:
            return
        counts: dict[str, int] = {}
        memory: dict[str, int] = {}
        for module, pid in list(self.live()) if workers is None else workers:
            counts[module] = counts.get(module, 0) + 1
            memory[module] = memory.get(module, 0) + resident_bytes(tree(pid))
        for module in self._seen - counts.keys():
            m.workers_live.labels(module).set(0)
            m.worker_memory.labels(module).set(0)
        for module, count in counts.items():
            m.workers_live.labels(module).set(count)
            m.worker_memory.labels(module).set(memory[module])
        self._seen = set(counts)

    async def run(self, interval: float = 5.0) -> None:
        """Sample every `interval` seconds until cancelled."""
        while True:
            try:
                workers = list(self.live())  # on the loop, which changes the pool
                await asyncio.to_thread(self.sample, workers)
            except Exception:  # a sample missed; the next one may do
                log.exception("sampling the module workers failed")
            await asyncio.sleep(interval)
