"""Prometheus metrics: what other components call to record (one call at each point),
and what a scrape answers. See docs/metrics.md for every metric and docs/observability.md
("Metrics and readiness") for the choice of labels and the multi-process mode."""

from modhub.metrics.record import (
    UNMATCHED,
    JobTimer,
    configure,
    event_delivered,
    job_started,
    observe_request,
    observe_route,
    operation,
    store_call,
    worker_ended,
    worker_started,
)

__all__ = [
    "UNMATCHED",
    "JobTimer",
    "configure",
    "event_delivered",
    "job_started",
    "observe_request",
    "observe_route",
    "operation",
    "store_call",
    "worker_ended",
    "worker_started",
]
