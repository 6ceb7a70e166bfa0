"""Which runner owns a running job run: each runner holds a lease it renews on a heartbeat.

Every `JobRunner` (one per process) gets an owner id of its own; a run records its owner
when it starts running. The runner keeps a row of `job_runners` fresh while it lives. A
runner fails another's running runs only when that owner is gone:

- its lease expired: not renewed for `LEASE_BEATS` heartbeats (a crash, a hang, a lost
  machine; whatever the host);
- or its process is known to have stopped: on this host, its pid is dead, or it is our own
  pid but not one of this process's runners (a previous life of this process whose pid came
  back after a restart, as pid 1 does in a container);
- or it has no lease at all (it stopped cleanly and gave its lease up, or the run started
  before owners were recorded).

So several API processes, or two `modhub serve` on one SQLite data dir, share the runs
without failing each other's, and a restarted process fails its own stale runs at once.
Leases compare the runners' clocks: machines sharing PostgreSQL must keep them in step
(NTP) to well within the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modhub.jobs.store import RetryPolicy, RunStore

log = logging.getLogger("modhub.jobs")

LEASE_BEATS = 3  # heartbeats a runner may miss before its runs are failed
_LIVE: set[str] = set()  # owner ids of this process's runners that have not stopped


@dataclass(frozen=True)
class Owner:
    """A runner's identity: a fresh id, and the host and pid of its process."""

    id: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> Owner:
        """Return a new owner id for a runner of this process."""
        owner = cls(uuid.uuid4().hex, socket.gethostname(), os.getpid())
        _LIVE.add(owner.id)
        return owner


def gone(owner: str, host: str, pid: int) -> bool:
    """Return whether the process of a runner is known to have stopped (only a runner of
    this host can be judged; any other waits for its lease to expire)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    if pid == os.getpid():
        return owner not in _LIVE  # our pid but not our runner: a previous life
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, as another user
    return False


class Lease:
    """One runner's lease: renewed every `heartbeat`, expired after `LEASE_BEATS` of them."""

    def __init__(
        self, store: RunStore, heartbeat: timedelta, retry: RetryPolicy | None = None
    ) -> None:
        self.store = store
        self.retry = retry  # when an interrupted attempt is tried again (None: never)
        self.owner = Owner.new()
        self.heartbeat = heartbeat
        self.renewed_at: datetime | None = None
        # A heartbeat runs in a thread: one still running when its runner stops must not
        # take the lease back after `release` (it would hold the runner's runs for a ttl).
        self._lock = threading.Lock()
        self._released = False
        self._claiming = True

    def resume(self) -> None:
        """Hold the lease again from the next heartbeat (the runner starts, or restarts)."""
        with self._lock:
            self._released = False
            self._claiming = True

    def stop_claiming(self) -> None:
        """Claim no more runs (the server is stopping), while the heartbeat keeps the lease,
        and with it the runs still going, this runner's."""
        self._claiming = False

    @property
    def ttl(self) -> timedelta:
        """Return how long a lease lasts without a heartbeat."""
        return self.heartbeat * LEASE_BEATS

    def due(self, now: datetime) -> bool:
        """Return whether the heartbeat is due (or the clock went back)."""
        if self.renewed_at is None:
            return True
        return not timedelta(0) <= now - self.renewed_at < self.heartbeat

    def held(self, now: datetime) -> bool:
        """Return whether the lease is still this runner's: no run is claimed without it."""
        if self.renewed_at is None or not self._claiming:
            return False
        return timedelta(0) <= now - self.renewed_at < self.ttl

    def keep(self, now: datetime) -> int:
        """Renew the lease, then fail the running runs whose owner is gone (queueing their
        next attempt as `retry` says); return how many.

        The lease is renewed before this runner claims any run, so no other runner ever
        sees a run owned by a runner without a lease."""
        with self._lock:
            if self._released:
                return 0  # a heartbeat that outlived its runner
            _LIVE.add(self.owner.id)  # again, if it had stopped
            self.store.beat(self.owner, now)
            self.renewed_at = now
        failed = self.store.interrupt_running(now, self.owner.id, self.ttl, self.retry)
        if failed:
            log.warning("failed %d job run(s) whose runner stopped", failed)
        return failed

    def release(self) -> None:
        """Give the lease up (this runner stops): other runners fail (and retry) what it left
        running at their next heartbeat instead of waiting for the lease to expire."""
        with self._lock:
            self._released = True
            _LIVE.discard(self.owner.id)
            self.store.release(self.owner.id)
