"""Job runs in the database: enqueue once per tick, claim, finish, retry, cancel, prune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from modhub.cluster.notify import announce_runs
from modhub.db import Database
from modhub.db.models import JobRun, RunnerLease
from modhub.errors import Conflict, NotFound
from modhub.jobs.lease import Owner, gone
from modhub.registry.types import Shape

ACTIVE = ("queued", "running")
INTERRUPTED = "interrupted: the server stopped"
STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")


@dataclass(frozen=True)
class Interrupted:
    """A running attempt whose runner is gone, failed by `interrupt_running`."""

    module: str
    job: str
    version: str
    scheduled_at: datetime
    attempt: int


RetryPolicy = Callable[[Interrupted, datetime], datetime | None]


class RunView(Shape):
    id: int
    module: str
    job: str
    version: str
    trigger: str
    scheduled_at: datetime
    not_before: datetime
    attempt: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = None
    error: str | None
    log_tail: str


class RunPage(Shape):
    items: list[RunView]
    total: int
    limit: int
    offset: int


def view(run: JobRun) -> RunView:
    """Return a run as the API shows it."""
    return RunView(
        id=run.id,
        module=run.module,
        job=run.job,
        version=run.version,
        trigger=run.trigger,
        scheduled_at=run.scheduled_at,
        not_before=run.not_before,
        attempt=run.attempt,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        result=(run.result or {}).get("value"),
        error=run.error,
        log_tail=run.log[-4096:],
    )


class RunStore:
    """Every database operation on job runs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(
        self,
        module: str,
        job: str,
        version: str,
        scheduled_at: datetime,
        *,
        trigger: str,
        attempt: int = 1,
        not_before: datetime | None = None,
    ) -> RunView | None:
        """Insert a queued run; None when this tick (and attempt) already has one."""
        try:
            with self.db.write() as session:
                run = JobRun(
                    module=module,
                    job=job,
                    version=version,
                    trigger=trigger,
                    scheduled_at=scheduled_at,
                    attempt=attempt,
                    status="queued",
                    not_before=not_before or scheduled_at,
                    log="",
                )
                session.add(run)
                session.flush()
                announce_runs(session)  # every node's runner claims it at once
                return view(run)
        except IntegrityError:
            return None

    def enqueue_many(self, rows: list[dict[str, Any]], chunk: int = 1000) -> list[int]:
        """Insert scheduled runs in bulk, skipping ticks another scheduler inserted first
        (INSERT ... ON CONFLICT DO NOTHING on the unique key); return the ids inserted."""
        statement = self.insert_new().returning(JobRun.id)
        ids: list[int] = []
        for start in range(0, len(rows), chunk):
            with self.db.write() as session:
                inserted = session.scalars(statement, rows[start : start + chunk]).all()
                if inserted:
                    announce_runs(session)
                ids += inserted
        return ids

    def insert_new(self) -> Any:
        """Return an INSERT of runs that skips a tick (and attempt) already inserted."""
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        return insert(JobRun).on_conflict_do_nothing(
            index_elements=["module", "job", "scheduled_at", "attempt"]
        )

    def last_scheduled(self, module: str, job: str) -> datetime | None:
        """Return the newest tick fired for a job by the scheduler."""
        with self.db.read() as session:
            newest: datetime | None = session.scalar(
                select(func.max(JobRun.scheduled_at)).where(
                    JobRun.module == module, JobRun.job == job, JobRun.trigger == "schedule"
                )
            )
            return newest

    def claim(self, run_id: int, now: datetime, owner: str) -> bool:
        """Mark a queued run running, owned by the runner `owner`; False when another
        executor took it first."""
        with self.db.write() as session:
            result = session.execute(
                update(JobRun)
                .where(JobRun.id == run_id, JobRun.status == "queued")
                .values(status="running", started_at=now, owner=owner)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def finish(
        self,
        run_id: int,
        status: str,
        now: datetime,
        *,
        result: Any = None,
        error: str | None = None,
        log: str = "",
    ) -> bool:
        """Record a run's outcome unless it was cancelled meanwhile."""
        with self.db.write() as session:
            done = session.execute(
                update(JobRun)
                .where(JobRun.id == run_id, JobRun.status == "running")
                .values(
                    status=status,
                    finished_at=now,
                    error=error,
                    log=log[-16384:],
                    result=None if result is None else {"value": result},
                )
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def cancel(self, run_id: int, now: datetime) -> RunView:
        """Cancel a queued or running run."""
        with self.db.write() as session:
            run = session.get(JobRun, run_id)
            if run is None:
                raise NotFound(f"no job run {run_id}")
            if run.status not in ACTIVE:
                raise Conflict(f"run {run_id} is already {run.status}")
            run.status, run.finished_at, run.error = "cancelled", now, "cancelled"
            return view(run)

    def cancel_module(self, module: str, now: datetime, keep_version: str | None = None) -> int:
        """Cancel every active run of a module (of versions other than `keep_version`)."""
        with self.db.write() as session:
            where = [JobRun.module == module, JobRun.status.in_(ACTIVE)]
            if keep_version is not None:
                where.append(JobRun.version != keep_version)
            result = session.execute(
                update(JobRun)
                .where(*where)
                .values(
                    status="cancelled", finished_at=now, error="cancelled: the module was disabled"
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def cancel_stale(self, enabled: dict[str, str], seen_at: datetime, now: datetime) -> int:
        """Cancel queued runs of modules not in `enabled` (name → version) or of another
        version: nothing would ever start them. Only runs created before `seen_at` (when
        `enabled` was read) count: a newer one may be of a module enabled since."""
        with self.db.write() as session:
            queued = (JobRun.status == "queued", JobRun.created_at < seen_at)
            pairs = session.execute(
                select(JobRun.module, JobRun.version).where(*queued).distinct()
            ).all()
            cancelled = 0
            for module, version in pairs:
                if enabled.get(module) == version:
                    continue
                result = session.execute(
                    update(JobRun)
                    .where(JobRun.module == module, JobRun.version == version, *queued)
                    .values(
                        status="cancelled",
                        finished_at=now,
                        error=f"cancelled: {module} {version} is not enabled",
                    )
                )
                cancelled += int(result.rowcount)  # type: ignore[attr-defined]
            return cancelled

    def beat(self, owner: Owner, now: datetime) -> None:
        """Renew a runner's lease (made on its first heartbeat, or again if others
        expired it while it was stalled)."""
        with self.db.write() as session:
            renewed = session.execute(
                update(RunnerLease).where(RunnerLease.owner == owner.id).values(seen_at=now)
            )
            if not renewed.rowcount:  # type: ignore[attr-defined]
                session.add(
                    RunnerLease(
                        owner=owner.id, host=owner.host, pid=owner.pid, started_at=now, seen_at=now
                    )
                )

    def release(self, owner: str) -> None:
        """Delete a runner's lease (it stops)."""
        with self.db.write() as session:
            session.execute(delete(RunnerLease).where(RunnerLease.owner == owner))

    def interrupt_running(
        self, now: datetime, owner: str, ttl: timedelta, retry: RetryPolicy | None = None
    ) -> int:
        """Fail the running runs no live runner owns; return how many.

        An interrupted attempt is a failed attempt: `retry` says when its next attempt may
        start (None: failed for good), and that attempt is queued in the same transaction,
        so a crash in between cannot fail a run without its retry.

        `owner` (the caller) is alive. Another runner is gone when its lease is older than
        `ttl` or its process is known to have stopped (`lease.gone`); runs of a runner with
        no lease, or with no owner (started before owners were recorded), are failed too.
        The leases of gone runners are deleted. At start-up this is what fails the runs a
        crash of this process left running, without touching other processes' runs.
        """
        cutoff = now - ttl
        with self.db.write() as session:
            leases = session.execute(
                select(RunnerLease.owner, RunnerLease.host, RunnerLease.pid, RunnerLease.seen_at)
            ).all()
            expired = [o for o, _, _, seen in leases if o != owner and seen < cutoff]
            stopped = [o for o, host, pid, _ in leases if o != owner and gone(o, host, pid)]
            # One statement, so a runner that takes its lease and claims a run meanwhile is
            # seen alive with its run (the subquery and the rows share one snapshot).
            live = select(RunnerLease.owner).where(
                RunnerLease.seen_at >= cutoff, RunnerLease.owner.not_in(stopped)
            )
            interrupted = [
                Interrupted(*row)
                for row in session.execute(
                    update(JobRun)
                    .where(
                        JobRun.status == "running",
                        or_(
                            JobRun.owner.is_(None),
                            and_(JobRun.owner != owner, JobRun.owner.not_in(live)),
                        ),
                    )
                    .values(status="failed", finished_at=now, error=INTERRUPTED)
                    .returning(
                        JobRun.module,
                        JobRun.job,
                        JobRun.version,
                        JobRun.scheduled_at,
                        JobRun.attempt,
                    )
                    .execution_options(synchronize_session=False)
                ).all()
            ]
            retries = [
                {
                    "module": run.module,
                    "job": run.job,
                    "version": run.version,
                    "trigger": "retry",
                    "scheduled_at": run.scheduled_at,
                    "not_before": at,
                    "attempt": run.attempt + 1,
                    "status": "queued",
                    "log": "",
                }
                for run in interrupted
                if retry is not None and (at := retry(run, now)) is not None
            ]
            if retries:
                session.execute(self.insert_new(), retries)
                announce_runs(session)
            if expired or stopped:
                session.execute(
                    delete(RunnerLease).where(
                        or_(
                            # not one that came back and renewed its lease meanwhile
                            and_(RunnerLease.owner.in_(expired), RunnerLease.seen_at < cutoff),
                            RunnerLease.owner.in_(stopped),
                        )
                    )
                )
            return len(interrupted)

    def get(self, run_id: int) -> RunView:
        """Return one run."""
        with self.db.read() as session:
            run = session.get(JobRun, run_id)
            if run is None:
                raise NotFound(f"no job run {run_id}")
            return view(run)

    def status_of(self, run_id: int) -> str | None:
        """Return a run's status (None when pruned)."""
        with self.db.read() as session:
            status: str | None = session.scalar(select(JobRun.status).where(JobRun.id == run_id))
            return status

    def list(
        self,
        *,
        module: str | None = None,
        job: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunPage:
        """Return runs, newest first."""
        where = [
            c
            for c in (
                JobRun.module == module if module else None,
                JobRun.job == job if job else None,
                JobRun.status == status if status else None,
            )
            if c is not None
        ]
        with self.db.read() as session:
            total = session.scalar(select(func.count(JobRun.id)).where(*where)) or 0
            rows = session.scalars(
                select(JobRun).where(*where).order_by(JobRun.id.desc()).limit(limit).offset(offset)
            )
            return RunPage(items=[view(r) for r in rows], total=total, limit=limit, offset=offset)

    def prune(self, older_than: timedelta, now: datetime) -> int:
        """Delete finished runs older than the retention."""
        with self.db.write() as session:
            result = session.execute(
                delete(JobRun).where(
                    JobRun.status.not_in(ACTIVE), JobRun.created_at < now - older_than
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
