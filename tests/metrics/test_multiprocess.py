"""`modhub serve --workers 2` with MODHUB_METRICS_ADDRESS: every process's counters add up
in one scrape (prometheus-client's multi-process mode, a folder of the data dir emptied at
start), on the metrics address without a token and on /metrics with one. SQLite: what is
tested is the processes, not the database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import wait_healthy
from tests.conftest import PASSWORD, SECRET, LiveServer, bearer, free_port, stop_server
from tests.metrics.conftest import parse, value

NODES = "/api/v1/cluster/nodes"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """Yield `modhub serve --workers 2` and its metrics address."""
    port, metrics_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    stale = data_dir / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"a previous run's file, not even a valid one")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODHUB_", "PROMETHEUS_"))}
    env.update(
        MODHUB_DATA_DIR=str(data_dir),
        MODHUB_SECRET_KEY=SECRET,
        MODHUB_ADMIN_PASSWORD=PASSWORD,
        MODHUB_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
    )
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    live = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    wait_healthy(live.url, 120, process, live.output)
    yield live, f"http://127.0.0.1:{metrics_port}/metrics"
    stop_server(live)


def whose(client: httpx.Client) -> int:
    """Return the pid of the process answering on `client`'s connection."""
    answer = client.get(NODES)
    assert answer.status_code == 200, answer.text
    (pid,) = [node["pid"] for node in answer.json() if node["self"]]
    return int(pid)


def test_counters_of_both_processes_add_up(server: tuple[LiveServer, str]) -> None:
    live, address = server
    login = httpx.post(
        f"{live.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    auth = bearer(login.json()["accessToken"])
    clients: dict[int, httpx.Client] = {}
    calls = 0
    for _ in range(60):  # fresh connections until each process answered one
        client = httpx.Client(base_url=live.url, headers=auth, timeout=60)
        pid, calls = whose(client), calls + 1
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == 2:
            break
    assert len(clients) == 2, live.output()
    try:
        for times, client in zip((3, 5), clients.values(), strict=True):
            for _ in range(times):
                assert client.get(NODES).status_code == 200
        calls += 8
        files = {p.name for p in (live.data_dir / "metrics").iterdir()}
        assert "counter_1.db" not in files  # the folder was emptied at start
        assert {f"counter_{pid}.db" for pid in clients} <= files
        route = {"route": NODES, "method": "GET", "status": "200"}
        scraped = httpx.get(address, timeout=30)  # no token on the metrics address
        assert scraped.status_code == 200
        assert value(parse(scraped.text), "modhub_http_requests_total", **route) == calls
        for client in clients.values():  # either process answers for both
            answer = client.get("/metrics")
            assert answer.status_code == 200
            assert value(parse(answer.text), "modhub_http_requests_total", **route) == calls
        assert value(parse(scraped.text), "modhub_cluster_nodes", status="up") == 2
    finally:
        for client in clients.values():
            client.close()
