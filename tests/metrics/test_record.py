"""The recording calls: bounded label values, outcomes, and nothing recorded while off."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from modhub import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def enabled() -> Iterator[None]:
    metrics.configure(enabled=True)
    yield
    metrics.configure(enabled=True)


def test_a_route_of_a_module_not_served_is_one_label_value() -> None:
    labels = {"module": "unmatched", "route": "unmatched", "method": "unmatched", "status": "404"}
    before = sample("modhub_module_requests_total", **labels)
    for made_up in ("x1", "x2", "../../etc"):
        metrics.observe_route({"served-one"}, made_up, None, 404, time.perf_counter())
    assert sample("modhub_module_requests_total", **labels) - before == 3
    assert sample("modhub_module_requests_total", **{**labels, "module": "x1"}) == 0


def test_a_store_op_the_handler_made_up_is_unmatched_and_an_error() -> None:
    labels = {"module": "m", "op": "unmatched", "outcome": "error"}
    before = sample("modhub_store_calls_total", **labels)
    with pytest.raises(ValueError, match="nope"), metrics.store_call("m", "drop_tables"):
        raise ValueError("nope")
    assert sample("modhub_store_calls_total", **labels) - before == 1
    assert sample("modhub_store_calls_total", module="m", op="drop_tables", outcome="error") == 0


def test_an_operation_that_raises_is_failed() -> None:
    before = sample("modhub_lifecycle_operations_total", kind="upgrade", outcome="failed")
    with pytest.raises(RuntimeError), metrics.operation("upgrade"):
        raise RuntimeError("broken bundle")
    after = sample("modhub_lifecycle_operations_total", kind="upgrade", outcome="failed")
    assert after - before == 1


def test_worker_ends_count_their_cause_and_failures_as_crashes() -> None:
    crashes = sample("modhub_worker_crashes_total", module="w")
    metrics.worker_ended("w", "timeout")
    metrics.worker_ended("w", "idle")
    assert sample("modhub_worker_crashes_total", module="w") - crashes == 1
    assert sample("modhub_worker_kills_total", module="w", cause="idle") >= 1
    with pytest.raises(ValueError, match="unknown worker end cause 'bored'"):
        metrics.worker_ended("w", "bored")


def test_event_deliveries_by_outcome() -> None:
    labels = {"module": "sub", "event": "src/vm.created", "outcome": "dead"}
    before = sample("modhub_event_deliveries_total", **labels)
    metrics.event_delivered("sub", "src/vm.created", "dead")
    assert sample("modhub_event_deliveries_total", **labels) - before == 1


def test_nothing_is_recorded_while_metrics_are_off() -> None:
    metrics.configure(enabled=False)
    labels = {"route": "/off", "method": "GET", "status": "200"}
    metrics.observe_request("/off", "GET", 200, time.perf_counter())
    metrics.worker_started("off", restart=True)
    with metrics.operation("off"):
        pass
    assert sample("modhub_http_requests_total", **labels) == 0
    assert sample("modhub_worker_starts_total", module="off") == 0
    assert sample("modhub_lifecycle_operations_total", kind="off", outcome="succeeded") == 0
