"""Long operations run in the background, with steps and a log a client can poll.

An operation's row is written before its work starts and finished after, so a row still
`running` at start-up names an operation that a crash interrupted.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar

from modhub import metrics
from modhub.db import Database
from modhub.db.models import Operation, utcnow
from modhub.errors import NotFound
from modhub.registry.types import Shape

T = TypeVar("T")
LOG_TAIL = 16 * 1024
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def staging_name(unique: str) -> str:
    """Return the name of a staging folder of this process: `<unique>.<pid>.<host>`."""
    host, _, pid = OWNER.rpartition(":")
    return f"{unique}.{pid}.{host}"


def staging_owner(name: str) -> str | None:
    """Return the `host:pid` owner of a staging folder name (None for an older name)."""
    unique, _, rest = name.partition(".")
    pid, _, host = rest.partition(".")
    return f"{host}:{pid}" if unique and pid.isdecimal() and host else None


class Step(Shape):
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None


class OperationView(Shape):
    id: str
    kind: str
    module: str
    status: str
    actor: str
    steps: list[Step]
    log_tail: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class Context:
    """What an operation's work uses to report progress."""

    def __init__(self, db: Database, op_id: str, failpoint: str | None) -> None:
        self.db = db
        self.id = op_id
        self._failpoint = failpoint
        self._lock = threading.Lock()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record a named step around the block, with its outcome."""
        self._update_steps(name, "running")
        try:
            self.checkpoint(name)
            yield
        except BaseException:
            self._update_steps(name, "failed")
            raise
        self._update_steps(name, "succeeded")

    def checkpoint(self, name: str) -> None:
        """Block here forever when the `failpoint` setting names this step (crash tests)."""
        if self._failpoint == name:
            self.log(f"failpoint {name}: stopping here")
            while True:
                time.sleep(3600)

    def log(self, line: str) -> None:
        """Append a line to the operation's log (the tail is kept)."""
        with self._lock, self.db.write() as session:
            row = session.get(Operation, self.id)
            if row is not None:
                row.log = (row.log + line.rstrip("\n") + "\n")[-LOG_TAIL:]

    def _update_steps(self, name: str, status: str) -> None:
        with self._lock, self.db.write() as session:
            row = session.get(Operation, self.id)
            if row is None:
                return
            # Copies: a step changed in place would compare equal to the stored one, and
            # SQLAlchemy would then write nothing.
            steps = [dict(s) for s in row.steps]
            now = utcnow().isoformat()
            if status == "running":
                steps.append({"name": name, "status": status, "startedAt": now})
            else:
                for step in reversed(steps):
                    if step["name"] == name:
                        step.update(status=status, finishedAt=now)
                        break
            row.steps = steps


class Handle(Generic[T]):
    """A started operation: its id and its future result."""

    def __init__(self, op_id: str, future: Future[T]) -> None:
        self.id = op_id
        self.future = future

    def result(self, timeout: float) -> tuple[bool, T | None]:
        """Return (done, result) after waiting up to `timeout`; re-raise the work's error."""
        try:
            return True, self.future.result(timeout=timeout)
        except FutureTimeout:
            return False, None


class Operations:
    """Runs lifecycle work in a small thread pool and records it."""

    def __init__(self, db: Database, *, workers: int = 4, failpoint: str | None = None) -> None:
        self.db = db
        self.failpoint = failpoint
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modhub-op")

    def start(
        self, kind: str, module: str, actor: str, work: Callable[[Context], T], **detail: Any
    ) -> Handle[T]:
        """Record an operation and run `work` in the background."""
        op_id = uuid.uuid4().hex
        with self.db.write() as session:
            session.add(
                Operation(
                    id=op_id,
                    kind=kind,
                    module=module,
                    status="running",
                    actor=actor,
                    detail={**detail, "owner": OWNER},  # recovery asks if it still runs
                    steps=[],
                    log="",
                )
            )
        context = Context(self.db, op_id, self.failpoint)

        def run() -> T:
            try:
                with metrics.operation(kind):
                    result = work(context)
            except BaseException as exc:
                self._finish(op_id, "failed", str(exc))
                raise
            self._finish(op_id, "succeeded", None)
            return result

        return Handle(op_id, self._pool.submit(run))

    def get(self, op_id: str) -> OperationView:
        """Return an operation as the API shows it."""
        with self.db.read() as session:
            row = session.get(Operation, op_id)
            if row is None:
                raise NotFound(f"no operation '{op_id}'")
            return OperationView(
                id=row.id,
                kind=row.kind,
                module=row.module,
                status=row.status,
                actor=row.actor,
                steps=[Step.model_validate(s) for s in row.steps],
                log_tail=row.log[-4096:],
                error=row.error,
                created_at=row.created_at,
                finished_at=row.finished_at,
            )

    def _finish(self, op_id: str, status: str, error: str | None) -> None:
        with self.db.write() as session:
            row = session.get(Operation, op_id)
            if row is not None:
                row.status = status
                row.error = error
                row.finished_at = utcnow()

    def shutdown(self) -> None:
        """Stop taking work; running operations finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
