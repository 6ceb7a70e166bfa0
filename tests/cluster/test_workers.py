"""`modhub serve --workers 2`: two server processes on one port and one data dir, each a
node of the cluster, on SQLite (one file, WAL and busy_timeout) and on PostgreSQL.

Requests spread over both processes, a burst of connections too; a registry change made
through one is served by the other; a cron job's minute fires once, not once per process
(two minutes on the processes' shared test clock, `modhub/cluster/clock.py`, passed in
seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from modhub.db import Database, upgrade
from tests.cluster.conftest import clock_file, set_clock, through_minutes, ticked_at, wait_healthy
from tests.conftest import PASSWORD, LiveServer, bearer, free_port, stop_server
from tests.lifecycle.conftest import as_bundle, wait_for

WORKERS = 2
START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """Yield `modhub serve --workers 2` on the test database."""
    import os

    if not database_url.startswith("sqlite"):
        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        MODHUB_DATA_DIR=str(data_dir),
        MODHUB_DATABASE_URL=database_url,
        MODHUB_SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        MODHUB_ADMIN_PASSWORD=PASSWORD,
        MODHUB_PIP_OFFLINE="true",
        MODHUB_TESTING="true",
        MODHUB_TEST_CLOCK=str(clock_file(tmp_path / "clock")),
    )
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    live = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    wait_healthy(live.url, 180, process, live.output)  # two processes starting on a busy machine
    yield live
    stop_server(live)


def whose(client: httpx.Client) -> int:
    """Return the pid of the process that answers on `client`'s connection."""
    answer = client.get("/api/v1/cluster/nodes")
    assert answer.status_code == 200, answer.text
    (me,) = [node["pid"] for node in answer.json() if node["self"]]
    return int(me)


def cron_module(root: Path) -> Path:
    """Return a bundle with a route and a job firing every minute (no requirements)."""
    folder = root / "sources" / "minutely"
    (folder / "handlers").mkdir(parents=True)
    manifest = {
        "name": "minutely",
        "version": "1.0.0",
        "displayName": "Minutely",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/h.py"}]},
            "jobs": {
                "handlers": [{"name": "tick", "handler": "handlers/h.py", "schedule": "* * * * *"}]
            },
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest), "utf-8")
    (folder / "handlers" / "h.py").write_text("def handler(arg):\n    return 'pong'\n")
    return as_bundle(folder, "tar.gz")


def test_two_workers_are_two_nodes_of_one_cluster(
    server: LiveServer, tmp_path: Path, database_url: str
) -> None:
    clock = Path(server.env["MODHUB_TEST_CLOCK"])
    set_clock(clock, START)  # before the job exists: it starts from this time
    ticked_at(database_url, WORKERS, START)
    login = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    auth = bearer(login.json()["accessToken"])

    # Twenty connections opened at once spread over both processes (each accepts on a
    # socket of its own: on one shared socket, the first awake took a whole burst).
    barrier = threading.Barrier(20)

    def burst(_: int) -> int:
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            barrier.wait(60)
            return whose(client)

    with ThreadPoolExecutor(20) as pool:
        assert len(set(pool.map(burst, range(20)))) == WORKERS, server.output()

    # Both processes are nodes: the node list shows two up, and fresh connections reach both.
    clients: dict[int, httpx.Client] = {}
    for _ in range(60):
        client = httpx.Client(base_url=server.url, headers=auth, timeout=60)
        pid = whose(client)
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == WORKERS:
            break
    assert len(clients) == WORKERS, server.output()
    first, second = clients.values()
    up = [n for n in first.get("/api/v1/cluster/nodes").json() if n["status"] == "up"]
    assert sorted(n["pid"] for n in up) == sorted(clients)

    try:
        # A module installed and enabled through the first is served by the second.
        with cron_module(tmp_path).open("rb") as stream:
            uploaded = first.post("/api/v1/modules/bundles", files={"file": ("m.tar.gz", stream)})
        assert uploaded.status_code == 201, uploaded.text
        enabled = first.put("/api/v1/modules/minutely/status", json={"status": "ENABLED"})
        assert enabled.status_code == 200, enabled.text
        answer = wait_for(
            lambda: (a := second.get("/api/v1/m/minutely/ping")).status_code != 404 and a,
            30,
            "the second process to serve the module",
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == "pong"
        # Disabled through the second: the first stops serving it.
        disabled = second.put("/api/v1/modules/minutely/status", json={"status": "DISABLED"})
        assert disabled.status_code == 200, disabled.text
        wait_for(
            lambda: first.get("/api/v1/m/minutely/ping").status_code == 404,
            30,
            "the first process to stop serving the module",
        )
        assert second.get("/api/v1/m/minutely/ping").status_code == 404
        assert (
            first.put("/api/v1/modules/minutely/status", json={"status": "ENABLED"}).status_code
            == 200
        )

        # The job's minutes: each fires once across both processes, both ticking through
        # two minutes of the shared test clock.
        def runs() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = first.get(
                "/api/v1/jobs/runs", params={"module": "minutely", "limit": 500}
            ).json()["items"]
            return items

        def finished(minute: datetime) -> bool:
            stamp = minute.isoformat().replace("+00:00", "Z")
            return any(r["scheduledAt"] == stamp and r["status"] == "succeeded" for r in runs())

        through_minutes(clock, database_url, WORKERS, START, 2, finished)
        scheduled = sorted(r["scheduledAt"] for r in runs() if r["trigger"] == "schedule")
        assert scheduled == ["2030-01-01T00:01:00Z", "2030-01-01T00:02:00Z"], runs()
    finally:
        for client in clients.values():
            client.close()
