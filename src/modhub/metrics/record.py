"""The calls other components make to record what happened: one call at each point.

Each function is cheap (a label lookup and an add) and does nothing while metrics are off
(`MODHUB_METRICS=off`, see `configure`). Label values come from bounded sets only:
route templates and registered module names; anything else collapses to `UNMATCHED`.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from modhub.metrics import instruments as m

UNMATCHED = "unmatched"  # a path no route matched, a module not served, an unknown op
CAUSES = frozenset(
    {"exited", "timeout", "protocol", "oversize", "idle", "evicted", "retired", "shutdown"}
)
FAILURES = frozenset({"exited", "timeout", "protocol", "oversize"})
STORE_OPS = frozenset({"get_entry", "set", "delete", "list", "incr"})


class _State:
    enabled = True


state = _State()


def configure(*, enabled: bool) -> None:
    """Turn recording on or off for this process (the `MODHUB_METRICS` setting)."""
    state.enabled = enabled


# The children of the hot paths' metrics, by label values: `labels()` costs several times
# the increment itself, and the label values are bounded, so the children are kept.
_requests: dict[tuple[str | None, str, int], tuple[Any, Any]] = {}
_routes: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str | None, method: str, status: int, started: float) -> None:
    """Count an API request answered with `status`, timed from `started` (perf_counter)."""
    if not state.enabled:
        return
    elapsed = time.perf_counter() - started
    key = (route, method, status)
    children = _requests.get(key)
    if children is None:
        label = route or UNMATCHED
        children = _requests[key] = (
            m.http_requests.labels(label, method, str(status)),
            m.http_duration.labels(label, method),
        )
    children[0].inc()
    children[1].observe(elapsed)


def observe_route(
    served: Container[str],
    module: str,
    route: tuple[str, str] | None,
    status: int,
    started: float,
) -> None:
    """Count a request to a module route: `route` is its (method, template) once matched,
    `served` the modules served now (a name not served is not a label value)."""
    if not state.enabled:
        return
    elapsed = time.perf_counter() - started
    if route is None:
        module = module if module in served else UNMATCHED
        method, template = UNMATCHED, UNMATCHED
    else:
        method, template = route
    key = (module, template, method, status)
    children = _routes.get(key)
    if children is None:
        children = _routes[key] = (
            m.module_requests.labels(module, template, method, str(status)),
            m.module_duration.labels(module, template, method),
        )
    children[0].inc()
    children[1].observe(elapsed)


def worker_started(module: str, *, restart: bool) -> None:
    """Count a worker start (a restart when its module's last worker failed)."""
    if not state.enabled:
        return
    m.worker_starts.labels(module).inc()
    if restart:
        m.worker_restarts.labels(module).inc()


def worker_ended(module: str, cause: str) -> None:
    """Count a worker ended with `cause` (one of CAUSES); a failure is also a crash."""
    if not state.enabled:
        return
    if cause not in CAUSES:
        raise ValueError(f"unknown worker end cause {cause!r}; one of {sorted(CAUSES)}")
    m.worker_kills.labels(module, cause).inc()
    if cause in FAILURES:
        m.worker_crashes.labels(module).inc()


class JobTimer:
    """Times one job run from its start; `done` records it."""

    __slots__ = ("job", "module", "started")

    def __init__(self, module: str, job: str) -> None:
        self.module, self.job = module, job
        self.started = time.perf_counter()

    def done(self, status: str) -> None:
        """Record the run finished with `status`."""
        if not state.enabled:
            return
        m.job_runs.labels(self.module, self.job, status).inc()
        m.job_duration.labels(self.module, self.job).observe(time.perf_counter() - self.started)


def job_started(
    module: str, job: str, scheduled: datetime, now: datetime, attempt: int
) -> JobTimer:
    """Note a job run starting at `now` (the runner's clock); return its timer. The firing
    delay is observed for first attempts (a retry waits for its backoff on purpose)."""
    if state.enabled and attempt == 1:
        # SQLite gives back naive datetimes, in UTC.
        scheduled = scheduled if scheduled.tzinfo else scheduled.replace(tzinfo=UTC)
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        m.job_delay.labels(module).observe(max(0.0, (now - scheduled).total_seconds()))
    return JobTimer(module, job)


@contextmanager
def operation(kind: str) -> Iterator[None]:
    """Time a lifecycle operation of `kind`; its outcome is `failed` when the block raises."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "succeeded"
    finally:
        if state.enabled:
            m.operations.labels(kind, outcome).inc()
            m.operation_duration.labels(kind).observe(time.perf_counter() - started)


@contextmanager
def store_call(module: str, op: str) -> Iterator[None]:
    """Count a store call of a module's handler; its outcome is `error` when the block
    raises (an op name the handler made up is counted as `unmatched`)."""
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        if state.enabled:
            label = op if op in STORE_OPS else UNMATCHED
            m.store_calls.labels(module, label, outcome).inc()


def event_delivered(module: str, event: str, outcome: str) -> None:
    """Count an event delivery to subscriber `module` (for the events component)."""
    if state.enabled:
        m.event_deliveries.labels(module, event, outcome).inc()
