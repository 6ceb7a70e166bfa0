"""Claiming queued runs: any runner with free room takes the oldest ready runs, and a
module's concurrency limit holds for every runner sharing the database.

On PostgreSQL a claim is one round trip (`pipeline.py`): the modules of the oldest ready
runs are locked with an advisory transaction lock each (`module_key`, in key order, so two
runners' claims of one module are ordered and cannot both pass its limit), then one
statement counts their running runs, chooses and claims, its candidates locked
`FOR UPDATE SKIP LOCKED` (two runners claiming at once take different runs). On SQLite the
claim is one `BEGIN IMMEDIATE` transaction (`claim_in`): writers are serialized anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import Session

from modhub.db import Database
from modhub.db.models import JobRun

CLAIM_LOCK = 0x6A6F6273  # the first key of the two-key advisory locks on module names
CANDIDATES = 4  # runs read per free slot: some may be held back by their module's limit


@dataclass(frozen=True)
class Claim:
    """A run this runner now owns (its row is `running`)."""

    id: int
    module: str
    job: str
    version: str
    attempt: int
    scheduled_at: datetime


def module_key(module: str) -> int:
    """Return the advisory lock key of a module (a signed 32-bit hash of its name)."""
    digest = hashlib.blake2b(module.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


# Built once (building a statement cost as much as running it): the ready runs, oldest
# first, of the runnable modules; then the running runs of some modules; then the claim.
_READY = (JobRun.status == "queued", JobRun.not_before <= bindparam("now"))
_IN_MODULES = JobRun.module.in_(bindparam("modules", expanding=True))
_PROBE = select(JobRun.id).where(*_READY, _IN_MODULES).limit(1)
_CANDIDATES = (
    select(
        JobRun.id,
        JobRun.module,
        JobRun.job,
        JobRun.version,
        JobRun.attempt,
        JobRun.scheduled_at,
    )
    .where(*_READY, _IN_MODULES)
    .order_by(JobRun.not_before, JobRun.id)
    .limit(bindparam("limit"))
)
_RUNNING = (
    select(JobRun.module, func.count(JobRun.id))
    .where(JobRun.status == "running", _IN_MODULES)
    .group_by(JobRun.module)
)
_CLAIM = (
    update(JobRun)
    .where(JobRun.id.in_(bindparam("ids", expanding=True)), JobRun.status == "queued")
    .values(status="running", started_at=bindparam("started"), owner=bindparam("runner"))
)


def claim_ready(
    db: Database,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
    *,
    probe: bool = True,
) -> list[Claim]:
    """Claim up to `room` queued runs whose time has come, oldest first, for `owner`.

    `runnable` maps (module, job) to the version this runner can run; other runs are left
    queued. A module never has more than `per_module` runs running across all runners.
    With `probe` a read looks for a ready run first, so an idle round takes no write
    transaction; a caller that just claimed a full batch (more are likely) skips it.
    """
    if room <= 0 or not runnable:
        return []
    if db.dialect == "postgresql":  # one round trip, found or not: no probe
        from modhub.jobs.pipeline import round_trip

        return round_trip(
            db, (), now=now, owner=owner, room=room, per_module=per_module, runnable=runnable
        ).claims
    if probe:
        with db.query() as connection:  # most rounds find nothing: no write transaction
            ready = {"now": now, "modules": modules_of(runnable)}
            if connection.execute(_PROBE, ready).first() is None:
                return []
    with db.write() as session:
        return claim_in(session, now, owner, room, per_module, runnable)


def modules_of(runnable: Mapping[tuple[str, str], str]) -> list[str]:
    """Return the modules of the runnable jobs, sorted."""
    return sorted({module for module, _ in runnable})


def claim_in(
    session: Session | Connection,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
) -> list[Claim]:
    """Claim as `claim_ready` does, in the caller's write transaction (no probe; SQLite,
    whose writers are serialized: PostgreSQL claims with `pipeline.round_trip`); in Core,
    on the session's connection."""
    if room <= 0 or not runnable:
        return []
    connection = session if isinstance(session, Connection) else session.connection()
    found = connection.execute(
        _CANDIDATES, {"now": now, "modules": modules_of(runnable), "limit": room * CANDIDATES}
    )
    candidates = [
        Claim(*row) for row in found if runnable.get((row.module, row.job)) == row.version
    ]
    if not candidates:
        return []
    wanted = sorted({c.module for c in candidates})
    running: dict[str, int] = dict(connection.execute(_RUNNING, {"modules": wanted}).all())
    chosen: list[Claim] = []
    for claim in candidates:
        if len(chosen) >= room:
            break
        if running.get(claim.module, 0) >= per_module:
            continue
        running[claim.module] = running.get(claim.module, 0) + 1
        chosen.append(claim)
    if chosen:
        connection.execute(_CLAIM, {"ids": [c.id for c in chosen], "started": now, "runner": owner})
    return chosen
