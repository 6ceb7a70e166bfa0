"""The runner's batches: one round records every run that finished since the last round
(and queues its retry) in one transaction, claims runs for the freed slots in another,
and reads the claimed modules' configs in one query.

A trivial run used to cost a claim, a config read and a finish of its own (three
transactions and three thread hand-offs); a round now does that work for every run that
finished meanwhile, so the cost per run falls as the load rises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from modhub.cluster.notify import announce_runs
from modhub.db import Database
from modhub.db.models import JobRun, Module
from modhub.jobs.claim import Claim, claim_in, claim_ready
from modhub.keys import SecretBox
from modhub.registry import config as configs

LOG_KEPT = 16384  # characters of a run's log kept in its row


@dataclass(frozen=True)
class Outcome:
    """A run whose handler is done: what to record, and its next attempt if it failed."""

    run_id: int
    status: str
    finished_at: datetime
    result: Any = None
    error: str | None = None
    log: str = ""
    retry: dict[str, Any] | None = None  # the row of the next attempt (queued if recorded)


@dataclass
class Round:
    """What one round did: the runs whose outcome was recorded (the others had been
    cancelled meanwhile), the runs claimed, and the configs of their modules (None: the
    module is gone)."""

    recorded: set[int] = field(default_factory=set)
    claims: list[Claim] = field(default_factory=list)
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)


_FINISH = (
    update(JobRun)
    .where(JobRun.id == bindparam("run_id"), JobRun.status == "running")
    .values(
        status=bindparam("new_status"),
        finished_at=bindparam("at"),
        error=bindparam("err"),
        log=bindparam("text"),
        result=bindparam("value"),
    )
)


def record(session: Session, outcomes: Sequence[Outcome], insert_new: Any) -> set[int]:
    """Record outcomes in the caller's write transaction, each only if its run is still
    running, and queue the retries of the recorded ones; return the recorded run ids.

    `insert_new` is the INSERT that skips an attempt already queued (`RunStore`)."""
    if not outcomes:
        return set()
    ids = [o.run_id for o in outcomes]
    query = select(JobRun.id).where(JobRun.id.in_(ids), JobRun.status == "running")
    if session.get_bind().dialect.name == "postgresql":  # a cancel waits for us
        query = query.with_for_update()
    running = set(session.scalars(query).all())
    rows = [
        {
            "run_id": o.run_id,
            "new_status": o.status,
            "at": o.finished_at,
            "err": o.error,
            "text": o.log[-LOG_KEPT:],
            "value": None if o.result is None else {"value": o.result},
        }
        for o in outcomes
        if o.run_id in running
    ]
    if rows:
        session.connection().execute(_FINISH, rows)
    retries = [o.retry for o in outcomes if o.run_id in running and o.retry is not None]
    if retries:
        session.execute(insert_new, retries)
        announce_runs(session)  # any node may take them once their backoff is over
    return running


class ConfigReader:
    """The configs of the modules of claimed runs, read in one query per round; secrets are
    decrypted again only when a module's stored config changed."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def read(
        self, db: Database, modules: set[str], session: Session | None = None
    ) -> dict[str, dict[str, Any] | None]:
        """Return each module's config in clear (None for a module that is gone), read in
        `session` if given."""
        if not modules:
            return {}
        query = select(Module.name, Module.config).where(Module.name.in_(sorted(modules)))
        if session is not None:
            stored: dict[str, dict[str, Any]] = dict(session.execute(query).all())
        else:
            with db.query() as connection:
                stored = dict(connection.execute(query).all())
        out: dict[str, dict[str, Any] | None] = {}
        for name in modules:
            value = stored.get(name)
            if value is None:
                out[name] = None
                continue
            seen = self._seen.get(name)
            if seen is None or seen[0] != value:
                seen = (value, configs.unsealed(value, self.box))
                self._seen[name] = seen
            out[name] = seen[1]
        return out


def run_round(
    db: Database,
    outcomes: Sequence[Outcome],
    insert_new: Any,
    reader: ConfigReader,
    *,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
    probe: bool,
) -> Round:
    """Do one round (in a worker thread): record `outcomes`, then claim up to `room` runs
    (their slots are free once the outcomes are recorded) and read their configs, in one
    transaction. A round with nothing to record probes for a ready run first (unless the
    last one claimed all its room), so an idle one takes no write transaction."""
    done = Round()
    if not outcomes:
        if room > 0:
            done.claims = claim_ready(db, now, owner, room, per_module, runnable, probe=probe)
            done.configs = reader.read(db, {c.module for c in done.claims})
        return done
    with db.write() as session:
        done.recorded = record(session, outcomes, insert_new)
        done.claims = claim_in(session, now, owner, room, per_module, runnable)
        done.configs = reader.read(db, {c.module for c in done.claims}, session)
    return done
