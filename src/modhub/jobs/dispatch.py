"""The runner's batches: one round records every run that finished since the last round
(and queues its retry), claims runs for the freed slots and reads the claimed modules'
configs.

On PostgreSQL a round is one round trip (`pipeline.round_trip`): the outcomes, the claim's
locks and the claim in one pipeline, one implicit transaction. Outcomes with a retry to
queue (failed attempts) are recorded in a transaction of their own first. On SQLite a round
is one `BEGIN IMMEDIATE` transaction.

A trivial run used to cost a claim, a config read and a finish of its own (three
transactions and three thread hand-offs); a round now does that work for every run that
finished meanwhile, so the cost per run falls as the load rises.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, text, update
from sqlalchemy.orm import Session

from modhub.cluster.notify import announce_runs
from modhub.db import Database
from modhub.db.models import JobRun, Module
from modhub.jobs.claim import Claim, claim_in, claim_ready
from modhub.jobs.pipeline import LOG_KEPT, Outcome, finish_params, round_trip
from modhub.keys import SecretBox
from modhub.registry import config as configs

__all__ = ["ConfigReader", "Outcome", "Round", "record", "run_round", "writer"]


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
# PostgreSQL: every outcome in one statement, which also says which runs were running
# (a cancel committed first is skipped: the row is re-checked once its lock is free).
_FINISH_ALL = text(
    "UPDATE job_runs AS j SET status = v.status, finished_at = v.finished_at,"
    " error = v.error, log = v.log, result = CAST(v.result AS json)"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:statuses AS text[]),"
    " CAST(:ats AS timestamptz[]), CAST(:errors AS text[]), CAST(:logs AS text[]),"
    " CAST(:results AS text[])) AS v(id, status, finished_at, error, log, result)"
    " WHERE j.id = v.id AND j.status = 'running' RETURNING j.id"
)
_RUNNING_OF = select(JobRun.id).where(
    JobRun.id.in_(bindparam("ids", expanding=True)), JobRun.status == "running"
)
_CONFIGS = select(Module.name, Module.config).where(
    Module.name.in_(bindparam("names", expanding=True))
)
Executor = Session | Connection


def record(session: Executor, outcomes: Sequence[Outcome], insert_new: Any) -> set[int]:
    """Record outcomes in the caller's write transaction, each only if its run is still
    running, and queue the retries of the recorded ones; return the recorded run ids.

    `insert_new` is the INSERT that skips an attempt already queued (`RunStore`). Core
    statements, on the session's connection (the ORM would take a list of rows for an
    UPDATE by primary key)."""
    if not outcomes:
        return set()
    connection = session if isinstance(session, Connection) else session.connection()
    if connection.dialect.name == "postgresql":
        running = _finish_all(connection, outcomes)
    else:  # writers are serialized (BEGIN IMMEDIATE): nothing changes between the two
        ids = [o.run_id for o in outcomes]
        running = set(connection.execute(_RUNNING_OF, {"ids": ids}).scalars().all())
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
            connection.execute(_FINISH, rows)
    retries = [o.retry for o in outcomes if o.run_id in running and o.retry is not None]
    if retries:
        connection.execute(insert_new, retries)
        announce_runs(connection)  # any node may take them once their backoff is over
    return running


def _finish_all(connection: Connection, outcomes: Sequence[Outcome]) -> set[int]:
    """Record outcomes in one UPDATE (PostgreSQL); return the ids of the runs recorded."""
    return set(connection.execute(_FINISH_ALL, finish_params(outcomes)).scalars().all())


class ConfigReader:
    """The configs of the modules of claimed runs, read in one query per round; secrets are
    decrypted again only when a module's stored config changed."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def read(
        self, db: Database, modules: set[str], session: Executor | None = None
    ) -> dict[str, dict[str, Any] | None]:
        """Return each module's config in clear (None for a module that is gone), read in
        `session` if given."""
        if not modules:
            return {}
        names = {"names": sorted(modules)}
        if session is not None:
            stored: dict[str, dict[str, Any]] = dict(session.execute(_CONFIGS, names).all())
        else:
            with db.query() as connection:
                stored = dict(connection.execute(_CONFIGS, names).all())
        return self.decode(modules, stored)

    def decode(
        self, modules: set[str], stored: Mapping[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """Return each module's config in clear from its stored one (None: it is gone)."""
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
    (their slots are free once the outcomes are recorded) and read their configs.

    On PostgreSQL one round trip (after a transaction recording the outcomes that queue a
    retry, if any). On SQLite one transaction; a round with nothing to record probes for a
    ready run first (unless the last one claimed all its room), so an idle one takes no
    write transaction."""
    done = Round()
    if db.dialect == "postgresql":
        if any(o.retry is not None for o in outcomes):
            with writer(db).begin() as connection:
                done.recorded = record(connection, outcomes, insert_new)
            outcomes = ()
        trip = round_trip(
            db, outcomes, now=now, owner=owner, room=room, per_module=per_module, runnable=runnable
        )
        done.recorded |= trip.recorded
        done.claims = trip.claims
        done.configs = reader.decode({c.module for c in trip.claims}, trip.stored)
        return done
    if not outcomes:
        if room > 0:
            done.claims = claim_ready(db, now, owner, room, per_module, runnable, probe=probe)
            done.configs = reader.read(db, {c.module for c in done.claims})
        return done
    with writer(db).begin() as connection:  # Core: a session's ORM layer cost more here
        done.recorded = record(connection, outcomes, insert_new)
        done.claims = claim_in(connection, now, owner, room, per_module, runnable)
        done.configs = reader.read(db, {c.module for c in done.claims}, connection)
    return done


_WRITERS: weakref.WeakKeyDictionary[Database, Engine] = weakref.WeakKeyDictionary()


def writer(db: Database) -> Engine:
    """Return the engine of `db` whose transactions write (BEGIN IMMEDIATE on SQLite, as
    `Database.write`)."""
    engine = _WRITERS.get(db)
    if engine is None:
        engine = _WRITERS[db] = db.engine.execution_options(immediate=True)
    return engine
