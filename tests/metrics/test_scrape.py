"""GET /metrics on a served platform with a real module: who may read it, and what each
metric counts after the platform did the thing it measures. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest

from modhub.db.models import Event, EventDelivery, utcnow
from modhub.errors import Conflict
from modhub.registry import Status
from tests.metrics.conftest import ACTOR, MODULE, Platform, value, write_module

M = f"/api/v1/m/{MODULE}"


def test_metrics_need_the_metrics_read_permission(platform: Platform) -> None:
    client, headers = platform.client, platform.headers
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers=headers["viewer"])
    assert refused.status_code == 403
    assert "metrics:read" in refused.json()["detail"]
    for caller in ("admin", "metrics"):
        response = client.get("/metrics", headers=headers[caller])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
    # Prometheus's role reads the metrics and nothing else.
    assert client.get("/api/v1/modules", headers=headers["metrics"]).status_code == 403


def test_module_routes_are_counted_by_template_never_by_path(platform: Platform) -> None:
    before = platform.scrape()
    for item in ("1", "2", "three"):
        assert platform.client.get(f"{M}/items/{item}", headers=platform.headers["admin"]).json()
    assert platform.client.get(f"{M}/no/such/path", headers=platform.headers["admin"]).status_code
    assert platform.client.get("/api/v1/m/nosuch/x", headers=platform.headers["admin"])
    after = platform.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    item = {"module": MODULE, "route": "/items/{id}", "method": "GET"}  # the manifest: /items/:id
    assert delta("modhub_module_requests_total", **item, status="200") == 3
    assert delta("modhub_module_request_duration_seconds_count", **item) == 3
    assert delta("modhub_module_request_duration_seconds_sum", **item) > 0
    unmatched = {"route": "unmatched", "method": "unmatched", "status": "404"}
    assert delta("modhub_module_requests_total", module=MODULE, **unmatched) == 1
    assert delta("modhub_module_requests_total", module="unmatched", **unmatched) == 1
    labels = {v for name, pairs in after for k, v in pairs if name.startswith("modhub_")}
    assert not {v for v in labels if "three" in v or "nosuch" in v or "no/such" in v}


def test_api_requests_are_counted_by_route_template(platform: Platform) -> None:
    before = platform.scrape()
    for name in (MODULE, "absent-one", "absent-two"):
        platform.client.get(f"/api/v1/modules/{name}", headers=platform.headers["viewer"])
    platform.client.get("/no/route/here/at-all")
    after = platform.scrape()
    route = {"route": "/api/v1/modules/{name}", "method": "GET"}
    assert (
        value(after, "modhub_http_requests_total", **route, status="200")
        - value(before, "modhub_http_requests_total", **route, status="200")
        == 1
    )
    assert (
        value(after, "modhub_http_requests_total", **route, status="404")
        - value(before, "modhub_http_requests_total", **route, status="404")
        == 2
    )
    assert (
        value(after, "modhub_http_request_duration_seconds_count", **route)
        - value(before, "modhub_http_request_duration_seconds_count", **route)
        == 3
    )
    unmatched = {"route": "unmatched", "method": "GET"}
    assert value(after, "modhub_http_requests_total", **unmatched, status="404") > value(
        before, "modhub_http_requests_total", **unmatched, status="404"
    )


def test_a_worker_crash_and_its_restart_are_counted(platform: Platform) -> None:
    pool = platform.services.pool
    pool.limits = dataclasses.replace(pool.limits, backoff_base=0.0, backoff_max=0.0)
    admin = platform.headers["admin"]
    assert platform.client.get(f"{M}/items/1", headers=admin).status_code == 200
    before = platform.scrape()
    assert platform.client.post(f"{M}/crash", headers=admin).status_code >= 500
    assert platform.client.get(f"{M}/items/1", headers=admin).status_code == 200
    after = platform.scrape()
    for name, labels in (
        ("modhub_worker_crashes_total", {}),
        ("modhub_worker_kills_total", {"cause": "exited"}),
        ("modhub_worker_starts_total", {}),
        ("modhub_worker_restarts_total", {}),
    ):
        assert (
            value(after, name, module=MODULE, **labels)
            - value(before, name, module=MODULE, **labels)
            == 1
        ), name
    assert value(after, "modhub_workers", module=MODULE) == 1
    assert value(after, "modhub_worker_memory_bytes", module=MODULE) > 1024 * 1024


def test_store_calls_and_store_use(platform: Platform) -> None:
    before = platform.scrape()
    answer = platform.client.get(f"{M}/keep", headers=platform.headers["admin"])
    assert answer.json() == {"by": "admin-user"}
    after = platform.scrape()
    for op in ("set", "get_entry"):
        labels = {"module": MODULE, "op": op, "outcome": "ok"}
        assert (
            value(after, "modhub_store_calls_total", **labels)
            - value(before, "modhub_store_calls_total", **labels)
            == 1
        ), op
    assert value(after, "modhub_store_keys", module=MODULE) == 1
    assert value(after, "modhub_store_bytes", module=MODULE) > len("seen")


def test_lifecycle_operations_by_kind_and_outcome(platform: Platform) -> None:
    lifecycle = platform.services.lifecycle
    before = platform.scrape()
    name = "metered-broken"  # its system dependency is missing: enabling it fails
    folder = write_module(platform.sources, name, dependencies={"system": {"python": ">=99"}})
    lifecycle.add_bundle(folder, actor=ACTOR)
    with pytest.raises(Conflict, match="system requirements not met"):
        lifecycle.set_status(name, Status.ENABLED, actor=ACTOR)
    assert platform.services.registry.get(name).status == Status.REGISTERED
    assert lifecycle.set_status(MODULE, Status.DISABLED, actor=ACTOR)[0]
    assert lifecycle.set_status(MODULE, Status.ENABLED, actor=ACTOR)[0]
    after = platform.scrape()

    def delta(kind: str, outcome: str) -> float:
        labels = {"kind": kind, "outcome": outcome}
        return value(after, "modhub_lifecycle_operations_total", **labels) - value(
            before, "modhub_lifecycle_operations_total", **labels
        )

    assert delta("enable", "failed") == 1
    assert delta("enable", "succeeded") == 1
    assert delta("disable", "succeeded") == 1
    assert value(after, "modhub_modules", status="REGISTERED") >= 1
    assert value(after, "modhub_modules", status="ENABLED") >= 1


def test_queue_depth_and_nodes_are_read_from_the_database(platform: Platform) -> None:
    store = platform.services.jobs.store
    later = utcnow() + timedelta(days=1)
    for minute in range(3):  # queued for tomorrow: they wait in the queue meanwhile
        scheduled = later + timedelta(minutes=minute)
        store.enqueue(MODULE, "tick", "1.0.0", scheduled, trigger="test", not_before=later)
    now = utcnow()
    with platform.services.db.write() as session:
        for seq, status in enumerate(("pending", "pending", "dead", "delivered")):
            event = Event(source="src", name="vm.created", seq=seq, payload={}, emitted_at=now)
            session.add(event)
            session.flush()  # one delivery an event and subscriber
            session.add(
                EventDelivery(
                    event_id=event.id,
                    subscriber=MODULE,
                    source="src",
                    seq=seq,
                    status=status,
                    next_attempt_at=now,
                )
            )
    samples = platform.scrape()
    assert value(samples, "modhub_job_queue_depth", module=MODULE) == 3
    assert value(samples, "modhub_event_backlog", module=MODULE, status="pending") == 2
    assert value(samples, "modhub_event_backlog", module=MODULE, status="dead") == 1
    assert value(samples, "modhub_event_backlog", module=MODULE, status="delivered") == 0
    assert value(samples, "modhub_cluster_nodes", status="up") == 1
    assert value(samples, "modhub_database_up") == 1


def test_job_runs_by_status_with_duration_and_firing_delay(platform: Platform) -> None:
    before = platform.scrape()
    ran = platform.client.post(
        f"/api/v1/modules/{MODULE}/jobs/tick/run", headers=platform.headers["admin"]
    )
    assert ran.status_code in (200, 201, 202), ran.text
    run_id = ran.json()["id"]
    deadline = time.monotonic() + 60  # the runner's own loop runs it: wait for its row
    while time.monotonic() < deadline:
        run = platform.client.get(f"/api/v1/jobs/runs/{run_id}", headers=platform.headers["admin"])
        if run.json()["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert run.json()["status"] == "succeeded", run.text
    after = platform.scrape()
    job = {"module": MODULE, "job": "tick"}
    assert (
        value(after, "modhub_job_runs_total", **job, status="succeeded")
        - value(before, "modhub_job_runs_total", **job, status="succeeded")
        == 1
    )
    assert (
        value(after, "modhub_job_run_duration_seconds_count", **job)
        - value(before, "modhub_job_run_duration_seconds_count", **job)
        == 1
    )
    assert (
        value(after, "modhub_job_firing_delay_seconds_count", module=MODULE)
        - value(before, "modhub_job_firing_delay_seconds_count", module=MODULE)
        == 1
    )
