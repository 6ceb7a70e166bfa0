"""`GET /modules/{name}/logs`: a bounded tail, whatever the module printed, from every node.

The attack: a viewer's request for the log of a module that had printed 200 lines of
15 MiB answered 3.1 GB. The server now keeps lines of at most 16 KiB, and the endpoint
answers the last `limit` lines, at most 1 MiB of them. Lines are kept in the database
(every node's, `cluster/logs.py`); `entries` says where each came from.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modhub.cluster.logs import LogShipper
from modhub.sandbox.output import OutputLimits
from modhub.services import Services
from tests.api.conftest import API, assert_problem, error_paths, manifest, register
from tests.conftest import bearer

LIMITS = OutputLimits()


@pytest.fixture
def shouter(client: TestClient, services: Services, tokens: dict[str, str]) -> str:
    """Register module `shouter` and feed it 200 lines of 15 MiB, as a worker would."""
    register(client, tokens["admin"], manifest("shouter"))
    huge = "z" * (15 * 1024 * 1024)
    for i in range(200):
        services.pool.output.add("shouter", "shouter@1.0.0", f"{i:03d} {huge}")
    return "shouter"


def test_the_tail_is_bounded_by_the_ring(
    client: TestClient, tokens: dict[str, str], shouter: str
) -> None:
    response = client.get(
        f"{API}/modules/{shouter}/logs",
        params={"limit": LIMITS.max_log_lines},
        headers=bearer(tokens["viewer"]),
    )
    assert response.status_code == 200
    assert len(response.content) <= LIMITS.max_log_bytes + 64 * 1024
    lines = response.json()["lines"]
    assert lines[-1].startswith("199 zzz")
    assert max(len(line.encode()) for line in lines) <= LIMITS.max_line_bytes + 40


def test_limit_returns_the_last_lines(
    client: TestClient, tokens: dict[str, str], shouter: str
) -> None:
    response = client.get(
        f"{API}/modules/{shouter}/logs", params={"limit": 3}, headers=bearer(tokens["viewer"])
    )
    assert response.status_code == 200
    assert [line[:3] for line in response.json()["lines"]] == ["197", "198", "199"]


def test_without_limit_the_tail_is_200_lines(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("chatty"))
    for i in range(1000):
        services.pool.output.add("chatty", "chatty@1.0.0", f"line {i}")
    response = client.get(f"{API}/modules/chatty/logs", headers=bearer(tokens["viewer"]))
    assert response.status_code == 200
    lines = response.json()["lines"]
    assert lines == [f"line {i}" for i in range(800, 1000)]


def test_a_module_that_printed_nothing_has_an_empty_log(
    client: TestClient, tokens: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("quiet"))
    response = client.get(f"{API}/modules/quiet/logs", headers=bearer(tokens["viewer"]))
    assert response.status_code == 200
    assert response.json() == {"lines": [], "entries": []}


def test_lines_from_every_node_in_time_order_each_with_its_node(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("spread"))
    other = LogShipper(services.db, "node-b", max_lines=1000, max_bytes=1 << 20)
    here = services.module_logs
    here.add("spread", "first, here", "stderr", "req-1")
    other.add("spread", "second, on b", "stderr", None)
    here.add("spread", "third, here, not written yet", "modhub", None)
    assert other.flush() == 1  # node b's line is only in the database
    response = client.get(f"{API}/modules/spread/logs", headers=bearer(tokens["viewer"]))
    assert response.status_code == 200
    body = response.json()
    assert body["lines"] == ["first, here", "second, on b", "third, here, not written yet"]
    assert [(e["node"], e["stream"], e["requestId"]) for e in body["entries"]] == [
        (services.nodes.id, "stderr", "req-1"),
        ("node-b", "stderr", None),
        (services.nodes.id, "modhub", None),
    ]
    assert services.nodes.id in {
        n["id"] for n in client.get(f"{API}/cluster/nodes", headers=bearer(tokens["viewer"])).json()
    }


@pytest.mark.parametrize("limit", ["0", "-1", str(LIMITS.max_log_lines + 1), "ten", "1e9"])
def test_a_bad_limit_is_a_422_naming_it(
    client: TestClient, tokens: dict[str, str], limit: str
) -> None:
    register(client, tokens["admin"], manifest("quiet"))
    response = client.get(
        f"{API}/modules/quiet/logs", params={"limit": limit}, headers=bearer(tokens["viewer"])
    )
    body = assert_problem(response, 422)
    assert error_paths(body) == ["query:limit"]


def test_an_unknown_module_is_a_404(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get(f"{API}/modules/nobody/logs", headers=bearer(tokens["viewer"]))
    assert_problem(response, 404)
