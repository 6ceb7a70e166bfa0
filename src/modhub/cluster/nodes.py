"""The cluster's nodes: each server process keeps a row of `cluster_nodes` fresh.

A node writes its row when it starts serving and on every heartbeat (`heartbeat_at`, and
its `state`: modules materialized, live workers, runs in flight, its job runner's lease
owner), and sets `stopped_at` on a clean shutdown. Any node reading the table judges the
others by their own heartbeat interval (kept in their state):

- `up`: a heartbeat within `GONE_BEATS` of its intervals;
- `gone`: no heartbeat for longer (killed, hung, cut off), and never stopped cleanly;
- `stopped`: it shut down cleanly.

On each heartbeat a node also sweeps: the job runner lease of every node it sees gone is
released (`release`, the job store's: its running runs are then failed or handed back by
the next heartbeat of any live runner, as `jobs/lease.py` describes for a runner without a
lease), and rows whose last heartbeat is older than `FORGET_AFTER` are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import delete, select, update

from modhub import __version__
from modhub.db import Database
from modhub.db.models import ClusterNode, utcnow

log = logging.getLogger("modhub.cluster")

GONE_BEATS = 3  # heartbeats a node may miss before it is shown gone
FORGET_AFTER = timedelta(days=7)  # rows of nodes silent this long are deleted
DEFAULT_HEARTBEAT = 5.0  # seconds; for a row that does not say its own
Status = Literal["up", "gone", "stopped"]


@dataclass(frozen=True)
class NodeReport:
    """What a node says of itself on a heartbeat."""

    materialized: list[str] = field(default_factory=list)  # "name@version"
    live_workers: int = 0
    runs_in_flight: int = 0
    last_error: str | None = None
    runner: str | None = None  # its job runner's lease owner id


@dataclass(frozen=True)
class NodeView:
    """One node as the node list shows it."""

    id: str
    host: str
    pid: int
    address: str | None
    modhub_version: str
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None
    status: Status
    modules_materialized: list[str]
    live_workers: int
    runs_in_flight: int
    last_error: str | None
    is_self: bool  # the node answering


def on_disk(modules: Path) -> list[str]:
    """Return the versions whose code folder exists under `modules` ("name@version")."""
    try:
        return sorted(
            f"{name.name}@{version.name}"
            for name in modules.iterdir()
            if name.is_dir()
            for version in name.iterdir()
            if version.is_dir() and not version.name.startswith(".")
        )
    except OSError:  # no modules folder yet, or the data dir was deleted
        return []


def status_of(row: ClusterNode, now: datetime) -> Status:
    """Return whether a node is up, gone, or stopped, judged by its own heartbeat."""
    if row.stopped_at is not None:
        return "stopped"
    seconds = _number((row.state or {}).get("heartbeatSeconds"), DEFAULT_HEARTBEAT)
    silent = now - row.heartbeat_at
    return "gone" if silent > timedelta(seconds=seconds * GONE_BEATS) else "up"


class NodeRegistry:
    """This process's row in `cluster_nodes`, its heartbeat, and the list of every node."""

    def __init__(
        self,
        db: Database,
        *,
        heartbeat: timedelta,
        report: Callable[[], NodeReport] = NodeReport,
        release: Callable[[str], None] = lambda owner: None,
        address: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.heartbeat = heartbeat
        self.report = report
        self.release = release
        self.address = address
        self.clock = clock
        self.id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at: datetime | None = None
        self._last_report = NodeReport()

    # -- this node -------------------------------------------------------------------------

    def register(self, now: datetime | None = None) -> None:
        """Write this node's row (it starts serving, again if it had stopped)."""
        self.started_at = now or self.clock()
        self.beat(self.started_at, starting=True)

    def beat(self, now: datetime | None = None, *, starting: bool = False) -> list[str]:
        """Renew this node's row (written again if it was deleted), then sweep: release
        the job leases of nodes seen gone, delete long-gone rows. Return the ids of the
        nodes whose leases this beat released."""
        now = now or self.clock()
        if self.started_at is None:
            self.started_at = now
        try:
            report = self._last_report = self.report()
        except Exception:  # what it runs is unknown this time; that it lives is not
            log.exception("the node could not report its state")
            report = self._last_report
        state = {
            "heartbeatSeconds": self.heartbeat.total_seconds(),
            "modulesMaterialized": report.materialized,
            "liveWorkers": report.live_workers,
            "runsInFlight": report.runs_in_flight,
            "runner": report.runner,
        }
        values: dict[str, Any] = {
            "heartbeat_at": now,
            "state": state,
            "last_error": report.last_error,
        }
        if starting:  # a beat never clears `stopped_at`: one late beat after stop() may run
            values.update(started_at=self.started_at, stopped_at=None)
        with self.db.write() as session:
            renewed = session.execute(
                update(ClusterNode).where(ClusterNode.id == self.id).values(**values)
            )
            if not renewed.rowcount:  # type: ignore[attr-defined]
                session.add(
                    ClusterNode(
                        id=self.id,
                        host=self.host,
                        pid=self.pid,
                        address=self.address,
                        modhub_version=__version__,
                        started_at=self.started_at,
                        heartbeat_at=now,
                        state=state,
                        last_error=report.last_error,
                    )
                )
        return self.sweep(now)

    def stop(self, now: datetime | None = None) -> None:
        """Mark this node stopped (a clean shutdown)."""
        now = now or self.clock()
        with self.db.write() as session:
            session.execute(
                update(ClusterNode)
                .where(ClusterNode.id == self.id)
                .values(stopped_at=now, heartbeat_at=now)
            )

    async def run(self) -> None:
        """Beat every `heartbeat` until cancelled (the database work off the event loop)."""
        while True:
            await asyncio.sleep(self.heartbeat.total_seconds())
            try:
                await asyncio.to_thread(self.beat)
            except Exception:  # a database hiccup: the next beat tries again
                log.exception("the node heartbeat failed")

    # -- every node ------------------------------------------------------------------------

    def sweep(self, now: datetime) -> list[str]:
        """Release the job leases of nodes gone since the last sweep; forget long-gone
        nodes. Return the ids of the nodes whose leases were released."""
        released: list[str] = []
        with self.db.read() as session:
            rows = list(session.scalars(select(ClusterNode).where(ClusterNode.id != self.id)))
        for row in rows:
            state = row.state or {}
            if status_of(row, now) != "gone" or state.get("leasesReleasedAt"):
                continue
            runner = state.get("runner")
            if isinstance(runner, str) and runner:
                self.release(runner)
            with self.db.write() as session:
                # Only if it did not come back meanwhile (its beat renews heartbeat_at).
                session.execute(
                    update(ClusterNode)
                    .where(ClusterNode.id == row.id, ClusterNode.heartbeat_at == row.heartbeat_at)
                    .values(state={**state, "leasesReleasedAt": now.isoformat()})
                )
            log.warning(
                "node %s (%s pid %d) is gone: no heartbeat since %s; its job leases are released",
                row.id,
                row.host,
                row.pid,
                row.heartbeat_at.isoformat(),
            )
            released.append(row.id)
        with self.db.write() as session:
            session.execute(
                delete(ClusterNode).where(ClusterNode.heartbeat_at < now - FORGET_AFTER)
            )
        return released

    def nodes(self, now: datetime | None = None) -> list[NodeView]:
        """Return every known node, newest first."""
        now = now or self.clock()
        with self.db.read() as session:
            rows = list(
                session.scalars(
                    select(ClusterNode).order_by(ClusterNode.started_at.desc(), ClusterNode.id)
                )
            )
        return [self._view(row, now) for row in rows]

    def _view(self, row: ClusterNode, now: datetime) -> NodeView:
        state: dict[str, Any] = row.state or {}
        materialized = state.get("modulesMaterialized")
        return NodeView(
            id=row.id,
            host=row.host,
            pid=row.pid,
            address=row.address,
            modhub_version=row.modhub_version,
            started_at=row.started_at,
            last_heartbeat_at=row.heartbeat_at,
            stopped_at=row.stopped_at,
            status=status_of(row, now),
            modules_materialized=[str(m) for m in materialized]
            if isinstance(materialized, list)
            else [],
            live_workers=int(_number(state.get("liveWorkers"), 0)),
            runs_in_flight=int(_number(state.get("runsInFlight"), 0)),
            last_error=row.last_error,
            is_self=row.id == self.id,
        )


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return default
    return float(value)
