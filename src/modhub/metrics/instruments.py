"""Every metric modhub records in its processes, defined once (docs/metrics.md lists them).

Names follow Prometheus's conventions: `modhub_` first, `_total` on counters, base units
(`_seconds`, `_bytes`). Every label takes values from a bounded set: a route template or
a registered module's name, never a raw path (see `record.py`). The gauges say how
`prometheus-client`'s multi-process mode adds the processes of `serve --workers N` up.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets: a request answers in milliseconds to its timeout (up to 600 s). Each
# bucket is a line per route in every scrape: 12 keep /metrics fast with 100 modules.
LATENCY = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
RUN = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600)
DELAY = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
OPERATION = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

http_requests = Counter(
    "modhub_http_requests_total",
    "API requests answered, by route template, method and status",
    ["route", "method", "status"],
)
http_duration = Histogram(
    "modhub_http_request_duration_seconds",
    "Time to answer an API request, by route template and method",
    ["route", "method"],
    buckets=LATENCY,
)
module_requests = Counter(
    "modhub_module_requests_total",
    "Requests to module routes, by module, route template, method and status",
    ["module", "route", "method", "status"],
)
module_duration = Histogram(
    "modhub_module_request_duration_seconds",
    "Time to answer a request to a module route, by module, route template and method",
    ["module", "route", "method"],
    buckets=LATENCY,
)
worker_starts = Counter("modhub_worker_starts_total", "Module worker processes started", ["module"])
worker_restarts = Counter(
    "modhub_worker_restarts_total",
    "Module workers started again after their module's worker failed",
    ["module"],
)
worker_crashes = Counter(
    "modhub_worker_crashes_total",
    "Module workers that failed: exited, answered garbage or too much, or timed out",
    ["module"],
)
worker_kills = Counter(
    "modhub_worker_kills_total",
    "Module workers ended by the platform, by cause "
    "(exited, timeout, protocol, oversize, idle, evicted, retired, shutdown)",
    ["module", "cause"],
)
workers_live = Gauge(
    "modhub_workers",
    "Module worker processes alive, by module (sampled)",
    ["module"],
    multiprocess_mode="livesum",
)
worker_memory = Gauge(
    "modhub_worker_memory_bytes",
    "Resident memory of a module's worker processes and their children (sampled)",
    ["module"],
    multiprocess_mode="livesum",
)
job_runs = Counter(
    "modhub_job_runs_total",
    "Job runs finished, by module, job and status (succeeded, failed, timed_out, cancelled)",
    ["module", "job", "status"],
)
job_duration = Histogram(
    "modhub_job_run_duration_seconds",
    "Time a job run took, by module and job",
    ["module", "job"],
    buckets=RUN,
)
job_delay = Histogram(
    "modhub_job_firing_delay_seconds",
    "Time from a run's scheduled time to its start (first attempts), by module",
    ["module"],
    buckets=DELAY,
)
operations = Counter(
    "modhub_lifecycle_operations_total",
    "Lifecycle operations finished, by kind and outcome (succeeded, failed)",
    ["kind", "outcome"],
)
operation_duration = Histogram(
    "modhub_lifecycle_operation_duration_seconds",
    "Time a lifecycle operation took, by kind",
    ["kind"],
    buckets=OPERATION,
)
store_calls = Counter(
    "modhub_store_calls_total",
    "Store calls of module handlers, by module, operation and outcome (ok, error)",
    ["module", "op", "outcome"],
)
event_deliveries = Counter(
    "modhub_event_deliveries_total",
    "Event deliveries to subscribers, by module, event and outcome",
    ["module", "event", "outcome"],
)
