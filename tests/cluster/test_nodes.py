"""The node list: each server process registers itself and heartbeats; a node that stops
heartbeating is shown gone and its job leases are released; stopped and long-gone nodes;
GET /api/v1/cluster/nodes on SQLite and PostgreSQL, with a controlled clock (no sleeps)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from modhub import __version__
from modhub.api.app import create_app
from modhub.cluster.nodes import NodeRegistry, NodeReport
from modhub.db.models import ClusterNode, RunnerLease, utcnow
from modhub.jobs.lease import Owner
from modhub.services import Services
from modhub.settings import Settings
from tests.api.conftest import API
from tests.conftest import bearer

FIELDS = {
    "id",
    "host",
    "pid",
    "address",
    "modhubVersion",
    "startedAt",
    "lastHeartbeatAt",
    "stoppedAt",
    "status",
    "modulesMaterialized",
    "liveWorkers",
    "runsInFlight",
    "lastError",
    "self",
}
BEAT = timedelta(seconds=5)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No scheduler and no background heartbeat: the test drives both with its clock."""
    return settings.model_copy(update={"scheduler": False, "node_heartbeat_seconds": 3600})


@pytest.fixture
def clock(services: Services) -> Clock:
    """The clock of the answering node's registry."""
    clock = Clock()
    services.nodes.clock = clock
    return clock


@pytest.fixture
def client(services: Services, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as test_client:
        yield test_client


@pytest.fixture
def viewer(services: Services, client: TestClient) -> dict[str, str]:
    services.auth.create_user("viewer", "viewer", "correct horse battery")
    response = client.post(
        f"{API}/auth/login", json={"username": "viewer", "password": "correct horse battery"}
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["accessToken"])


def listed(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = client.get(f"{API}/cluster/nodes", headers=headers)
    assert response.status_code == 200, response.text
    return {node["id"]: node for node in response.json()}


def node(services: Services, clock: Clock, **report: Any) -> NodeRegistry:
    """Return another node on the same database, on the test's clock."""
    return NodeRegistry(
        services.db,
        heartbeat=BEAT,
        report=lambda: NodeReport(**report),
        release=services.jobs.store.release,
        address="http://10.0.0.2:4000",
        clock=clock,
    )


def test_the_answering_node_lists_itself(
    services: Services, client: TestClient, viewer: dict[str, str]
) -> None:
    nodes = listed(client, viewer)
    me = nodes[services.nodes.id]
    assert set(me) == FIELDS
    assert me["self"] is True
    assert me["status"] == "up"
    assert me["host"] == socket.gethostname()
    assert me["pid"] == os.getpid()
    assert me["modhubVersion"] == __version__
    assert me["address"] == f"http://{services.settings.host}:{services.settings.port}"
    assert me["stoppedAt"] is None
    assert (me["liveWorkers"], me["runsInFlight"], me["lastError"]) == (0, 0, None)


def test_a_heartbeat_reports_what_the_node_runs(
    services: Services, client: TestClient, viewer: dict[str, str], clock: Clock
) -> None:
    (services.lifecycle.layout.code("hello", "1.0.0")).mkdir(parents=True)
    services.materializer.last_error = "requirement x could not be installed on node b"
    before = listed(client, viewer)[services.nodes.id]["lastHeartbeatAt"]
    clock.advance(5)
    services.nodes.beat()
    me = listed(client, viewer)[services.nodes.id]
    assert me["modulesMaterialized"] == ["hello@1.0.0"]
    assert me["lastError"] == "requirement x could not be installed on node b"
    assert me["lastHeartbeatAt"] > before


def test_a_silent_node_is_gone_and_its_job_leases_are_released(
    services: Services, client: TestClient, viewer: dict[str, str], clock: Clock
) -> None:
    other = node(services, clock, runner="runner-of-b", live_workers=2, runs_in_flight=1)
    other.register()
    store = services.jobs.store
    store.beat(Owner("runner-of-b", "node-b.example", 4242), clock.now)
    run = store.enqueue("hello", "tick", "1.0.0", clock.now, trigger="manual")
    assert run is not None
    assert store.claim(run.id, clock.now, "runner-of-b")

    listing = listed(client, viewer)[other.id]
    assert (listing["status"], listing["self"]) == ("up", False)
    assert (listing["liveWorkers"], listing["runsInFlight"]) == (2, 1)
    assert listing["address"] == "http://10.0.0.2:4000"

    clock.advance(15)  # three beats missed, not more: still up
    assert services.nodes.beat() == []
    assert listed(client, viewer)[other.id]["status"] == "up"

    clock.advance(1)
    assert services.nodes.beat() == [other.id]
    assert listed(client, viewer)[other.id]["status"] == "gone"
    with services.db.read() as session:
        assert session.get(RunnerLease, "runner-of-b") is None
    assert services.nodes.beat() == []  # released once
    # Its runner's own lease (30 s) has not expired: the release is what lets the next
    # heartbeat of a live runner fail the run.
    services.jobs.lease.keep(clock.now)
    failed = client.get(f"{API}/jobs/runs/{run.id}", headers=viewer).json()
    assert failed["status"] == "failed"
    assert "interrupted" in failed["error"]

    clock.advance(1)
    other.beat()  # it was only cut off: back up
    assert listed(client, viewer)[other.id]["status"] == "up"


def test_a_clean_stop_shows_stopped_and_releases_nothing(
    services: Services, client: TestClient, viewer: dict[str, str], clock: Clock
) -> None:
    other = node(services, clock, runner="runner-of-c")
    other.register()
    other.stop()
    services.jobs.store.beat(Owner("runner-of-c", "node-c.example", 4343), clock.now)
    clock.advance(60)
    assert services.nodes.beat() == []
    listing = listed(client, viewer)[other.id]
    assert listing["status"] == "stopped"
    assert listing["stoppedAt"] is not None
    other.register()  # started again
    assert listed(client, viewer)[other.id]["status"] == "up"


def test_nodes_gone_for_a_week_are_forgotten(
    services: Services, client: TestClient, viewer: dict[str, str], clock: Clock
) -> None:
    gone, stopped = node(services, clock), node(services, clock)
    gone.register()
    stopped.register()
    stopped.stop()
    clock.advance(timedelta(days=7).total_seconds() - 1)
    services.nodes.beat()
    assert {gone.id, stopped.id} <= set(listed(client, viewer))
    clock.advance(2)
    services.nodes.beat()
    nodes = listed(client, viewer)
    assert set(nodes) == {services.nodes.id}
    with services.db.read() as session:
        assert session.scalars(select(ClusterNode.id)).all() == [services.nodes.id]


def test_a_node_judges_another_by_its_own_heartbeat(services: Services, clock: Clock) -> None:
    slow = NodeRegistry(services.db, heartbeat=timedelta(seconds=60), clock=clock)
    slow.register()
    clock.advance(100)  # 20 of the observer's beats, under 3 of the slow node's
    assert services.nodes.beat() == []
    assert {n.id: n.status for n in services.nodes.nodes()}[slow.id] == "up"
    clock.advance(81)
    assert services.nodes.beat() == [slow.id]


def test_a_shutdown_marks_the_node_stopped(services: Services, clock: Clock) -> None:
    with TestClient(create_app(services=services)):
        pass
    mine = {n.id: n for n in services.nodes.nodes()}[services.nodes.id]
    assert mine.status == "stopped"


def test_a_node_whose_report_fails_still_heartbeats(services: Services, clock: Clock) -> None:
    answers = iter([NodeReport(runner="runner-of-d", live_workers=4)])

    def report() -> NodeReport:
        return next(answers)  # StopIteration from the second beat on

    flaky = NodeRegistry(services.db, heartbeat=BEAT, report=report, clock=clock)
    flaky.register()
    clock.advance(12)
    flaky.beat()  # the report raises: the row is renewed with what it said last
    clock.advance(12)
    view = {n.id: n for n in services.nodes.nodes()}[flaky.id]
    assert view.status == "up"
    assert view.live_workers == 4
