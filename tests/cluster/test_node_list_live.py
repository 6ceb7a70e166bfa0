"""The node list of real `modhub serve` nodes on one PostgreSQL database: every node lists
every node; one stopped with SIGTERM shows stopped, one killed with SIGKILL shows gone
once it missed three of its heartbeats (a short interval, waited for with a deadline)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modhub.db import Database, upgrade
from tests.conftest import PASSWORD, LiveServer, start_server, stop_server

BEAT = {"MODHUB_NODE_HEARTBEAT_SECONDS": "0.2"}


@pytest.fixture
def database(postgres_url: str) -> str:
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    return postgres_url


@pytest.fixture
def nodes(database: str, tmp_path: Path) -> Iterator[list[LiveServer]]:
    started = [start_server(tmp_path / name, database, BEAT) for name in ("a", "b", "c")]
    yield started
    for server in started:
        if server.process.poll() is None:
            stop_server(server)


def listing(server: LiveServer) -> dict[int, dict[str, Any]]:
    """Return the nodes `server` lists, by pid."""
    token = httpx.post(
        server.url + "/api/v1/auth/login",
        json={"username": "admin", "password": PASSWORD},
        timeout=10,
    ).json()["accessToken"]
    response = httpx.get(
        server.url + "/api/v1/cluster/nodes",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {node["pid"]: node for node in response.json()}


def wait_for_status(server: LiveServer, pid: int, status: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while (seen := listing(server)[pid]["status"]) != status:
        assert time.monotonic() < deadline, f"node {pid} is {seen}, not {status}"
        time.sleep(0.1)


def test_every_node_lists_every_node(nodes: list[LiveServer]) -> None:
    a, b, c = nodes
    for server in nodes:
        listed = listing(server)
        assert set(listed) >= {n.process.pid for n in nodes}
        mine = [n for n in listed.values() if n["self"]]
        assert [n["pid"] for n in mine] == [server.process.pid]
        assert mine[0]["address"] == server.url
        assert all(listed[n.process.pid]["status"] == "up" for n in nodes)

    stop_server(b)
    assert listing(a)[b.process.pid]["status"] == "stopped"

    c.process.kill()  # no clean shutdown: gone after three missed beats
    c.process.wait()
    wait_for_status(a, c.process.pid, "gone")
    assert listing(a)[a.process.pid]["status"] == "up"
