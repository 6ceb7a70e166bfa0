"""`modhub cluster nodes`: what it asks, what it prints, and once end to end against a real
server on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modhub.cli import client
from modhub.cli.app import app, out

from ..conftest import LiveServer
from .test_client import env, modhub, ok, token  # noqa: F401  (fixtures)

runner = CliRunner()
FLAGS = ("--url", "http://h:1", "--token", "t")
NODES = [
    {
        "id": "a1b2c3d4e5f6a7b8c9d0",
        "host": "node-a",
        "pid": 101,
        "address": "http://10.0.0.1:4000",
        "modhubVersion": "0.1.0",
        "startedAt": "2026-12-05T17:00:00.123456Z",
        "lastHeartbeatAt": "2026-12-05T18:00:00Z",
        "stoppedAt": None,
        "status": "up",
        "modulesMaterialized": ["hello@1.0.0", "core-auth@1.0.0", "b@1.0.0", "c@2.0.0"],
        "liveWorkers": 3,
        "runsInFlight": 1,
        "lastError": None,
        "self": True,
    },
    {
        "id": "ffffeeeeddddccccbbbb",
        "host": "[red]node-b",
        "pid": 202,
        "address": None,
        "modhubVersion": "0.1.0",
        "startedAt": "2026-12-05T16:00:00Z",
        "lastHeartbeatAt": "2026-12-05T16:30:00Z",
        "stoppedAt": None,
        "status": "gone",
        "modulesMaterialized": [],
        "liveWorkers": 0,
        "runsInFlight": 0,
        "lastError": "requirement x could not be installed on node node-b",
        "self": False,
    },
]


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer every API request with NODES; return the URLs asked."""
    urls: list[str] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        urls.append(f"{method} {url}")
        return httpx.Response(200, json=NODES)

    monkeypatch.setattr(client.httpx, "request", request)
    return urls


def test_nodes_prints_a_table(asked: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The console's width is fixed when it is made (at import, from COLUMNS then): set it.
    monkeypatch.setattr(out, "width", 250)
    result = runner.invoke(app, ["cluster", "nodes", *FLAGS])
    assert result.exit_code == 0, result.output
    assert asked == ["GET http://h:1/api/v1/cluster/nodes"]
    lines = result.output.splitlines()
    first = next(line for line in lines if "a1b2c3d4e5f6 *" in line)
    for shown in ("up", "node-a", "101", "http://10.0.0.1:4000", "2026-12-05 17:00:00"):
        assert shown in first
    assert "hello@1.0.0, core-auth@1.0.0, b@1.0.0 +1" in first
    second = next(line for line in lines if "ffffeeeedddd" in line)
    assert "gone" in second
    assert "[red]node-b" in second  # the server's text, not Rich markup
    assert "requirement x could not be installed" in result.output
    assert "2 node(s)" in result.output


def test_nodes_json_prints_what_the_api_answered(asked: list[str]) -> None:
    result = runner.invoke(app, ["cluster", "nodes", "--json", *FLAGS])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == NODES


def test_nodes_against_a_real_server(
    live_server: LiveServer,
    env: dict[str, str],  # noqa: F811
) -> None:
    nodes = json.loads(ok(modhub("cluster", "nodes", "--json", env=env)))
    assert len(nodes) == 1
    (me,) = nodes
    assert me["self"] is True
    assert me["status"] == "up"
    assert me["address"] == live_server.url
    assert me["pid"] == live_server.process.pid
    table = ok(modhub("cluster", "nodes", env=env))
    assert f"{me['id'][:12]} *" in table
    assert "1 node(s)" in table
