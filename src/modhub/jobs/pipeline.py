"""A runner's round on PostgreSQL in one round trip: record the outcomes, take the
advisory locks of the modules it may claim, and claim (counted, chosen and marked running
in one statement, with the claimed modules' configs), all sent in one psycopg pipeline.

The pipeline runs in autocommit with one Sync at its end: PostgreSQL runs its statements as
one implicit transaction (committed at the Sync; one fails, none is kept), each statement
on a snapshot of its own (READ COMMITTED). So the claim's count of running runs is read
after the locks are held, and sees every claim committed before them, as a separate
transaction's would; the outcomes recorded first free their slots for the claim.

1. `_FINISH` (when there are outcomes): every outcome in one UPDATE, each only if its run is
   still running (a cancel committed first wins); it returns the runs recorded. The same
   statement (`_FINISH_PLANS`; without outcomes `PLANS` alone) turns bitmap and
   sequential scans off for the rest of the transaction, so the next two walk the ready
   runs' index in its order and stop at their LIMIT.
2. `_LOCK`: the modules of the oldest ready runs this runner can run (`room` x `CANDIDATES`
   of them) are locked, one advisory transaction lock per module (`claim.module_key`, in
   the order of their keys, as every claimer takes them: none deadlock), and named in a
   transaction-local setting (`modhub.claim_modules`) for the next statement.
3. `_CLAIM`: among the ready runs of those modules only (runs of another module may have
   come since; the next round takes them), the oldest (locked `FOR UPDATE SKIP LOCKED`),
   ranked per module and kept while their module has room under `per_module` once its
   running runs are counted; at most `room` marked running for `owner`, returned with
   their modules' stored configs. The UPDATE finds its rows by id alone: they are the
   candidates this statement locked, still queued (a change committed before the lock is
   rechecked against `_READY`). With `status = 'queued'` in its WHERE too, the planner,
   whose stats of a burst say one queued run, walked every queued run for each chosen one
   (15 ms a round at 3,000 queued).

Runners of earlier releases took the same locks, in the same order, before counting (in
statements of their own): old and new nodes can share one database during an upgrade.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from modhub.db import Database
from modhub.jobs.claim import CANDIDATES, CLAIM_LOCK, Claim, module_key

LOG_KEPT = 16384  # characters of a run's log kept in its row

_FINISH = (
    "UPDATE job_runs AS j SET status = v.status, finished_at = v.finished_at,"
    " error = v.error, log = v.log, result = CAST(v.result AS json)"
    " FROM unnest(CAST(%(ids)s AS integer[]), CAST(%(statuses)s AS text[]),"
    " CAST(%(ats)s AS timestamptz[]), CAST(%(errors)s AS text[]), CAST(%(logs)s AS text[]),"
    " CAST(%(results)s AS text[])) AS v(id, status, finished_at, error, log, result)"
    " WHERE j.id = v.id AND j.status = 'running' RETURNING j.id"
)
# The ready runs this runner can run: queued, due, of a job it runs at their version (a
# lookup in the JSON object of `Runnable.params` per row read).
_READY = (
    " c.status = 'queued' AND c.not_before <= %(now)s"
    " AND %(runnable)s ->> (c.module || ' ' || c.job) = c.version"
)
# The claim's plans walk `ix_job_runs_ready` in its order and stop at the LIMIT: the
# planner's stats of `job_runs` are mostly of finished runs (a burst of queued runs is
# estimated as a few rows: it would sort every ready run, twice a round, as long as the
# queue lasts). For this transaction only.
_PINNED = "set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
PLANS = f"SELECT {_PINNED}"
# With outcomes, one statement: the outcomes recorded (their ids), then the plans pinned.
_FINISH_PLANS = f"WITH f AS ({_FINISH}) SELECT ARRAY(SELECT id FROM f), {_PINNED}"
_LOCK = (
    "SELECT count(pg_advisory_xact_lock(%(lock)s, w.key)), set_config('modhub.claim_modules',"
    " CAST(coalesce(array_agg(w.module), CAST('{}' AS text[])) AS text), true)"
    " FROM (SELECT DISTINCT c.module, CAST(%(keys)s ->> c.module AS integer) AS key"
    f" FROM (SELECT c.module FROM job_runs AS c WHERE {_READY}"
    " ORDER BY c.not_before, c.id LIMIT %(limit)s) AS c ORDER BY key) AS w"
)
# The modules `_LOCK` locked (its setting, read once per statement).
_LOCKED = "ARRAY(SELECT unnest(CAST(current_setting('modhub.claim_modules') AS text[])))"
_CLAIM = (
    "WITH candidates AS ("
    " SELECT c.id, c.module, c.not_before FROM job_runs AS c"
    f" WHERE {_READY}"
    f" AND c.module = ANY({_LOCKED})"
    " ORDER BY c.not_before, c.id LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED),"
    " running AS (SELECT r.module, count(*) AS n FROM job_runs AS r WHERE r.status = 'running'"
    f" AND r.module = ANY({_LOCKED})"
    " GROUP BY r.module),"
    " chosen AS (SELECT k.id FROM (SELECT c.id, c.module, c.not_before, row_number()"
    " OVER (PARTITION BY c.module ORDER BY c.not_before, c.id) AS nth FROM candidates AS c)"
    " AS k LEFT JOIN running AS r ON r.module = k.module"
    " WHERE k.nth <= %(per_module)s - coalesce(r.n, 0)"
    " ORDER BY k.not_before, k.id LIMIT %(room)s),"
    " claimed AS (UPDATE job_runs AS j SET status = 'running', started_at = %(now)s,"
    " owner = %(owner)s FROM chosen WHERE j.id = chosen.id"
    " RETURNING j.id, j.module, j.job, j.version, j.attempt, j.scheduled_at, j.not_before)"
    " SELECT claimed.id, claimed.module, claimed.job, claimed.version, claimed.attempt,"
    " claimed.scheduled_at, m.config, m.name IS NOT NULL FROM claimed"
    " LEFT JOIN modules AS m ON m.name = claimed.module"
    " ORDER BY claimed.not_before, claimed.id"
)


@dataclass
class Done:
    """What a round did: the runs recorded, the runs claimed, and the stored configs of
    the claimed runs' modules (a module that is gone has none)."""

    recorded: set[int] = field(default_factory=set)
    claims: list[Claim] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)


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


class Runnable:
    """The parameters that say which runs a runner can run, built once per mapping."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[object, dict[str, Any]] = (None, {})

    def params(self, runnable: Mapping[tuple[str, str], str]) -> dict[str, Any]:
        """Return `runnable` as a JSON object ("module job": version; names have no spaces)
        and its modules' lock keys as another (module: key)."""
        with self._lock:
            if self._last[0] is runnable:
                return self._last[1]
        built = {
            "runnable": _json({f"{module} {job}": v for (module, job), v in runnable.items()}),
            "keys": _json({module: module_key(module) for module, _ in runnable}),
            "lock": CLAIM_LOCK,
        }
        with self._lock:
            self._last = (runnable, built)  # held: its id is not reused meanwhile
        return built


def _json(value: dict[str, Any]) -> Jsonb:
    """Return `value` as a jsonb parameter, its text made once (not at each statement)."""
    text = json.dumps(value)
    return Jsonb(value, dumps=lambda _: text)


_RUNNABLE = Runnable()
_AUTOCOMMIT: weakref.WeakKeyDictionary[Database, Engine] = weakref.WeakKeyDictionary()


def _autocommit(db: Database) -> Engine:
    """Return the engine of `db` in autocommit (a pipeline is then one implicit transaction)."""
    engine = _AUTOCOMMIT.get(db)
    if engine is None:
        engine = _AUTOCOMMIT[db] = db.engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def finish_params(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Return the parameters of `_FINISH` for `outcomes`."""
    return {
        "ids": [o.run_id for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "ats": [o.finished_at.astimezone(UTC) for o in outcomes],
        "errors": [o.error for o in outcomes],
        "logs": [o.log[-LOG_KEPT:] for o in outcomes],
        # As the JSON column stores them: no result is JSON null, as through the ORM.
        "results": [
            json.dumps(None if o.result is None else {"value": o.result}) for o in outcomes
        ],
    }


def claim_statements(
    *,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
) -> list[tuple[str, dict[str, Any]]]:
    """Return the claim's statements with their parameters, in order: the locks, then the
    claim (whose rows are the claimed runs). They run after `PLANS` (or the outcomes'
    statement, which pins the same plans), in one transaction."""
    params = {
        **_RUNNABLE.params(runnable),
        "now": now,
        "owner": owner,
        "room": room,
        "per_module": per_module,
        "limit": room * CANDIDATES,
    }
    return [(_LOCK, params), (_CLAIM, params)]


def round_trip(
    db: Database,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    owner: str,
    room: int,
    per_module: int,
    runnable: Mapping[tuple[str, str], str],
) -> Done:
    """Record `outcomes` (none with a retry to queue: `dispatch.run_round` records those
    in a transaction of their own) and claim up to `room` runs, in one round trip."""
    claiming = room > 0 and bool(runnable)
    if not outcomes and not claiming:
        return Done()
    with _autocommit(db).connect() as connection:
        raw = cast(psycopg.Connection[Any], connection.connection.driver_connection)
        try:
            with raw.pipeline():  # its end sends the Sync and waits for the commit
                finished = None
                if outcomes:
                    finished = raw.execute(_FINISH_PLANS, finish_params(outcomes), prepare=True)
                elif claiming:
                    raw.execute(PLANS, prepare=True)
                claimed = None
                if claiming:
                    for statement, params in claim_statements(
                        now=now, owner=owner, room=room, per_module=per_module, runnable=runnable
                    ):
                        claimed = raw.execute(statement, params, prepare=True)
            done = Done()
            if finished is not None:
                row = finished.fetchone()
                done.recorded = set(row[0]) if row is not None else set()
            for row in claimed.fetchall() if claimed is not None else []:
                run_id, module, job, version, attempt, scheduled_at, config, found = row
                done.claims.append(
                    Claim(run_id, module, job, version, attempt, scheduled_at.astimezone(UTC))
                )
                if found:
                    done.stored[module] = config
            return done
        except psycopg.Error:
            if raw.closed:  # a lost connection is not pooled again
                connection.invalidate()
            raise
