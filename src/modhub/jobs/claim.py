"""Claiming queued runs: any runner with free room takes the oldest ready runs, and a
module's concurrency limit holds for every runner sharing the database.

On PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED` (two runners claiming at
once take different runs and never wait for each other's rows), and the running runs of
each module are counted under an advisory transaction lock on the module's name, so two
runners' claims of one module are ordered and cannot both pass its limit. On SQLite the
claim is one `BEGIN IMMEDIATE` transaction: writers are serialized anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from modhub.db import Database
from modhub.db.models import JobRun

CLAIM_LOCK = 0x6A6F6273  # the first key of the two-key advisory locks on module names
CANDIDATES = 4  # runs read per free slot: some may be held back by their module's limit
# The advisory locks of several modules, taken in the order of their keys.
_LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(:lock, k)) FROM "
    "(SELECT unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS keys"
)


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
    if probe:
        with db.query() as connection:  # most rounds find nothing: no write transaction
            if connection.scalar(select(JobRun.id).where(*_ready(now, runnable)).limit(1)) is None:
                return []
    with db.write() as session:
        return claim_in(session, now, owner, room, per_module, runnable)


def _ready(now: datetime, runnable: Mapping[tuple[str, str], str]) -> tuple[Any, ...]:
    """Return the conditions of a run ready to claim: queued, due, of a runnable module."""
    modules = sorted({module for module, _ in runnable})
    ready = (JobRun.status == "queued", JobRun.not_before <= now, JobRun.module.in_(modules))
    return ready


def claim_in(
    session: Session,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
) -> list[Claim]:
    """Claim as `claim_ready` does, in the caller's write transaction (no probe)."""
    if room <= 0 or not runnable:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    ready = _ready(now, runnable)
    query = (
        select(
            JobRun.id,
            JobRun.module,
            JobRun.job,
            JobRun.version,
            JobRun.attempt,
            JobRun.scheduled_at,
        )
        .where(*ready)
        .order_by(JobRun.not_before, JobRun.id)
        .limit(room * CANDIDATES)
    )
    if postgres:
        query = query.with_for_update(skip_locked=True)
    candidates = [
        Claim(*row)
        for row in session.execute(query).all()
        if runnable.get((row.module, row.job)) == row.version
    ]
    if not candidates:
        return []
    wanted = {c.module for c in candidates}
    if postgres:
        # In one order for every runner (by key: names may share one), so none deadlock;
        # one statement for all of them (a round trip each cost more than the claim).
        session.execute(
            _LOCK_ALL, {"lock": CLAIM_LOCK, "keys": sorted({module_key(m) for m in wanted})}
        )
    # After the locks: on PostgreSQL this statement sees every claim committed before.
    running: dict[str, int] = {
        module: count
        for module, count in session.execute(
            select(JobRun.module, func.count(JobRun.id))
            .where(JobRun.status == "running", JobRun.module.in_(sorted(wanted)))
            .group_by(JobRun.module)
        ).all()
    }
    chosen: list[Claim] = []
    for claim in candidates:
        if len(chosen) >= room:
            break
        if running.get(claim.module, 0) >= per_module:
            continue
        running[claim.module] = running.get(claim.module, 0) + 1
        chosen.append(claim)
    if chosen:
        session.execute(
            update(JobRun)
            .where(JobRun.id.in_([c.id for c in chosen]), JobRun.status == "queued")
            .values(status="running", started_at=now, owner=owner)
            .execution_options(synchronize_session=False)
        )
    return chosen
