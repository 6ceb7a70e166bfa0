"""The example `hello` module's job through a real `modhub serve --examples` (as `make run`),
and `modhub jobs list|run|runs|logs` against it, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, LiveServer, bearer, stop_server
from tests.jobs.conftest import start_example_server, wait_for


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """Yield `modhub serve --examples examples/modules` on the test database."""
    live = start_example_server(tmp_path, database_url)
    yield live
    stop_server(live)


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    """Yield an API client of the server, logged in as admin."""
    login = httpx.post(
        server.url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    with httpx.Client(
        base_url=server.url + "/api/v1", headers=bearer(login.json()["accessToken"]), timeout=30
    ) as client:
        yield client


def wait_run(api: httpx.Client, run_id: int) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/jobs/runs/{run_id}").json()
        return run if run["status"] not in ("queued", "running") else None

    return wait_for(finished, what=f"run {run_id}")  # type: ignore[no-any-return]


def test_the_hello_tick_job_runs_through_a_live_server(
    server: LiveServer, api: httpx.Client
) -> None:
    hello = api.get("/modules/hello").json()
    assert hello["status"] == "ENABLED", server.output()
    (tick,) = api.get("/modules/hello/jobs").json()
    assert (tick["name"], tick["schedule"], tick["timeout"], tick["retries"]) == (
        "tick",
        "*/5 * * * *",
        10000,
        1,
    )
    fires = [datetime.fromisoformat(t) for t in tick["nextRuns"]]
    assert len(fires) == 3
    assert all(f.minute % 5 == 0 and f > datetime.now(UTC) for f in fires)

    answer = api.post("/modules/hello/jobs/tick/run")
    assert answer.status_code == 202, answer.text
    run = wait_run(api, answer.json()["id"])
    assert run["status"] == "succeeded", run
    assert run["result"] == {"ranAt": run["scheduledAt"].replace("Z", "+00:00"), "attempt": 1}
    history = api.get("/jobs/runs", params={"module": "hello", "job": "tick"}).json()
    assert run["id"] in [r["id"] for r in history["items"]]
    assert api.get("/jobs/runs", params={"status": "succeeded"}).json()["total"] >= 1


def modhub(server: LiveServer, api: httpx.Client, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m modhub ARGS` against the server, as admin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    token = api.headers["Authorization"].removeprefix("Bearer ")
    env.update({"MODHUB_URL": server.url, "MODHUB_TOKEN": token, "COLUMNS": "250"})
    return subprocess.run(
        [sys.executable, "-m", "modhub", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_jobs_cli_against_a_live_server(server: LiveServer, api: httpx.Client) -> None:
    listing = ok(modhub(server, api, "jobs", "list", "hello"))
    assert "tick" in listing
    assert "*/5 * * * *" in listing
    assert "UTC" in listing

    ran = ok(modhub(server, api, "jobs", "run", "hello", "tick"))
    run = json.loads(ran)
    assert (run["module"], run["job"], run["status"]) == ("hello", "tick", "succeeded")
    assert run["result"]["attempt"] == 1

    queued = json.loads(ok(modhub(server, api, "jobs", "run", "hello", "tick", "--no-wait")))
    assert queued["status"] in ("queued", "running", "succeeded")
    wait_run(api, queued["id"])

    runs = ok(modhub(server, api, "jobs", "runs", "--module", "hello", "--status", "succeeded"))
    assert str(run["id"]) in runs
    assert str(queued["id"]) in runs
    assert "succeeded" in runs
    assert "hello" not in ok(modhub(server, api, "jobs", "runs", "--status", "failed"))

    logs = ok(modhub(server, api, "jobs", "logs", str(run["id"])))
    assert "hello/tick attempt 1: succeeded" in logs
    assert '"attempt": 1' in logs

    missing = modhub(server, api, "jobs", "run", "hello", "nope")
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "nope" in missing.stderr
    unknown = modhub(server, api, "jobs", "logs", "999999")
    assert unknown.returncode != 0
    assert "Traceback" not in unknown.stderr
