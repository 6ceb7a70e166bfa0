"""Values that live in the database, read when Prometheus scrapes: a few grouped queries,
each bounded, whatever the number of modules, runs or keys.

The collector is added to a scrape once (by the process answering it), so a cluster's
nodes each report the same cluster-wide values; `max by` or one node's series in a query
counts them once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select

from modhub.cluster.nodes import status_of
from modhub.db import Database
from modhub.db.models import ClusterNode, EventDelivery, JobRun, Module, StoreUsage, utcnow

log = logging.getLogger("modhub.metrics")
MAX_ROWS = 10_000  # per query: a label value per row, so the series stay bounded too
MAX_NODES = 1_000

# More database-backed metrics: a function of a connection yielding metric families, for
# components that land later. Add with `add_source`.
Source = Callable[[Connection], Iterable[Metric]]
SOURCES: list[Source] = []


def add_source(source: Source) -> None:
    """Have every scrape also yield the metrics `source` reads from the database."""
    if source not in SOURCES:
        SOURCES.append(source)


class DatabaseCollector(Collector):
    """Reads modules, queued runs, store use and nodes from the database at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        """Yield the database's metrics; `modhub_database_up` 0 when it could not answer."""
        up = GaugeMetricFamily("modhub_database_up", "Whether the scrape could read the database")
        try:
            families = [*self._read()]
        except Exception:  # a scrape must answer: the process's own metrics still count
            log.exception("reading metrics from the database failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Metric]:
        with self.db.query() as connection:
            yield _modules(connection)
            yield from _runs(connection)
            yield from _store(connection)
            yield _events(connection)
            for source in list(SOURCES):
                yield from source(connection)
        yield self._nodes()

    def _nodes(self) -> Metric:
        family = GaugeMetricFamily(
            "modhub_cluster_nodes", "Nodes in the cluster's node list, by status", labels=["status"]
        )
        counts = dict.fromkeys(("up", "gone", "stopped"), 0)
        now = utcnow()
        with self.db.read() as session:
            rows = session.scalars(
                select(ClusterNode).order_by(ClusterNode.heartbeat_at.desc()).limit(MAX_NODES)
            )
            for row in rows:
                counts[status_of(row, now)] += 1
        for status, count in counts.items():
            family.add_metric([status], count)
        return family


def _modules(connection: Connection) -> Metric:
    family = GaugeMetricFamily("modhub_modules", "Registered modules, by status", labels=["status"])
    rows = connection.execute(select(Module.status, func.count()).group_by(Module.status))
    for status, count in rows:
        family.add_metric([status], count)
    return family


def _runs(connection: Connection) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "modhub_job_queue_depth", "Job runs waiting to start, by module", labels=["module"]
    )
    running = GaugeMetricFamily(
        "modhub_job_runs_running", "Job runs running on any node, by module", labels=["module"]
    )
    rows = connection.execute(
        select(JobRun.module, JobRun.status, func.count())
        .where(JobRun.status.in_(("queued", "running")))
        .group_by(JobRun.module, JobRun.status)
        .limit(MAX_ROWS)
    )
    for module, status, count in rows:
        (queued if status == "queued" else running).add_metric([module], count)
    yield queued
    yield running


def _store(connection: Connection) -> Iterator[Metric]:
    keys = GaugeMetricFamily("modhub_store_keys", "Keys in a module's store", labels=["module"])
    size = GaugeMetricFamily(
        "modhub_store_bytes", "Bytes a module's store holds (keys and values)", labels=["module"]
    )
    rows = connection.execute(
        select(StoreUsage.module, StoreUsage.keys, StoreUsage.bytes)
        .order_by(StoreUsage.bytes.desc())
        .limit(MAX_ROWS)
    )
    for module, count, used in rows:
        keys.add_metric([module], count)
        size.add_metric([module], used)
    yield keys
    yield size


def _events(connection: Connection) -> Metric:
    family = GaugeMetricFamily(
        "modhub_event_backlog",
        "Event deliveries not delivered, by subscriber and status (pending, running, dead)",
        labels=["module", "status"],
    )
    rows = connection.execute(
        select(EventDelivery.subscriber, EventDelivery.status, func.count())
        .where(EventDelivery.status.in_(("pending", "running", "dead")))
        .group_by(EventDelivery.subscriber, EventDelivery.status)
        .limit(MAX_ROWS)
    )
    for module, status, count in rows:
        family.add_metric([module, status], count)
    return family
