"""The jobs API in-process (its scheduler ticking on the real clock), on both databases."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.jobs.schedule import next_fires
from modhub.manifest.model import Job
from modhub.registry import Status
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import bearer
from tests.jobs.conftest import install, job, make_settings, set_status, unique, wait_for

API = "/api/v1"
SLEEP = {"sleep": {"type": "number", "label": "Sleep", "default": 20}}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """One run per module at once: a second run of a module waits, queued."""
    return make_settings(tmp_path / "data", database_url, job_concurrency_per_module=1)


@pytest.fixture
def module(services: Services, sources: Path) -> str:
    """Return an enabled module with a scheduled, a Paris, an on-demand and a slow job."""
    return install(
        services,
        sources,
        unique("api"),
        [
            job("every", schedule="*/5 * * * *"),
            job("paris", schedule="0 9 * * *", timezone="Europe/Paris", retries=2),
            job("ok"),
            job("slow", "jobs/slow.py", timeout=60_000),
        ],
        config=SLEEP,
    )


def run_status(client: TestClient, token: str, run_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/jobs/runs/{run_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(client: TestClient, token: str, run_id: int, *statuses: str) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (run := run_status(client, token, run_id))["status"] in statuses and run,
        what=f"run {run_id} to be {'/'.join(statuses)}",
    )


def test_list_a_modules_jobs_with_next_fire_times(
    client: TestClient, tokens: dict[str, str], module: str
) -> None:
    before = datetime.now().astimezone()
    response = client.get(f"{API}/modules/{module}/jobs", headers=bearer(tokens["viewer"]))
    after = datetime.now().astimezone()
    assert response.status_code == 200, response.text
    jobs = {j["name"]: j for j in response.json()}
    assert list(jobs) == ["every", "paris", "ok", "slow"]
    every = jobs["every"]
    assert (every["schedule"], every["timezone"], every["misfire"]) == (
        "*/5 * * * *",
        "UTC",
        "coalesce",
    )
    fires = [datetime.fromisoformat(t) for t in every["nextRuns"]]
    assert len(fires) == 3
    assert before < fires[0] <= after + timedelta(minutes=5)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(fires))
    paris = jobs["paris"]
    assert (paris["timezone"], paris["retries"]) == ("Europe/Paris", 2)
    expected = next_fires(
        Job(name="p", handler="jobs/ok.py", schedule="0 9 * * *", timezone="Europe/Paris"),
        before,
        3,
    )
    assert [datetime.fromisoformat(t) for t in paris["nextRuns"]] == expected
    assert jobs["ok"]["schedule"] is None
    assert jobs["ok"]["nextRuns"] == []
    assert jobs["slow"]["timeout"] == 60_000

    missing = client.get(f"{API}/modules/no-such-module/jobs", headers=bearer(tokens["viewer"]))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"{API}/modules/{module}/jobs").status_code == 401


def test_run_now_answers_202_and_the_run_shows_in_the_history(
    client: TestClient, tokens: dict[str, str], module: str
) -> None:
    operator, viewer = tokens["operator"], tokens["viewer"]
    response = client.post(f"{API}/modules/{module}/jobs/ok/run", headers=bearer(operator))
    assert response.status_code == 202, response.text
    run = response.json()
    assert (run["module"], run["job"], run["trigger"], run["status"], run["attempt"]) == (
        module,
        "ok",
        "manual",
        "queued",
        1,
    )
    assert run["version"] == "1.0.0"
    assert run["startedAt"] is None
    done = wait_status(client, viewer, run["id"], "succeeded", "failed", "timed_out")
    assert done["status"] == "succeeded", done
    assert done["result"]["job"] == "ok"
    assert done["result"]["attempt"] == 1
    assert done["startedAt"]
    assert done["finishedAt"]
    assert done["error"] is None
    assert "ran ok attempt 1" in done["logTail"]

    ids = [run["id"]]
    for _ in range(2):
        answer = client.post(f"{API}/modules/{module}/jobs/ok/run", headers=bearer(operator))
        assert answer.status_code == 202
        ids.append(answer.json()["id"])
    for run_id in ids:
        wait_status(client, viewer, run_id, "succeeded")

    def page(**params: Any) -> dict[str, Any]:
        answer = client.get(f"{API}/jobs/runs", params=params, headers=bearer(viewer))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    everything = page(module=module)
    assert everything["total"] == 3
    assert [r["id"] for r in everything["items"]] == sorted(ids, reverse=True)  # newest first
    assert page(module=module, job="ok", status="succeeded")["total"] == 3
    assert page(module=module, status="failed")["total"] == 0
    assert page(module=module, job="every")["total"] == 0
    assert page(module="other-module")["total"] == 0
    first = page(module=module, limit=2)
    assert (len(first["items"]), first["total"], first["limit"], first["offset"]) == (2, 3, 2, 0)
    rest = page(module=module, limit=2, offset=2)
    assert [r["id"] for r in rest["items"]] == [min(ids)]
    for bad in ({"status": "bogus"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
        answer = client.get(f"{API}/jobs/runs", params=bad, headers=bearer(viewer))
        assert answer.status_code == 422, bad
    assert client.get(f"{API}/jobs/runs/999999", headers=bearer(viewer)).status_code == 404


def test_cancel_queued_and_running_runs_then_409(
    client: TestClient, tokens: dict[str, str], module: str
) -> None:
    operator = tokens["operator"]
    slow = client.post(f"{API}/modules/{module}/jobs/slow/run", headers=bearer(operator)).json()
    wait_status(client, operator, slow["id"], "running")
    waiting = client.post(f"{API}/modules/{module}/jobs/ok/run", headers=bearer(operator)).json()
    wait_for(lambda: run_status(client, operator, slow["id"])["status"] == "running")
    # One run per module at a time: `ok` waits, queued, while `slow` runs.
    assert run_status(client, operator, waiting["id"])["status"] == "queued"

    cancelled = client.post(f"{API}/jobs/runs/{waiting['id']}/cancel", headers=bearer(operator))
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["startedAt"]) == ("cancelled", None)
    stopped = client.post(f"{API}/jobs/runs/{slow['id']}/cancel", headers=bearer(operator))
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "cancelled"

    again = client.post(f"{API}/jobs/runs/{slow['id']}/cancel", headers=bearer(operator))
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]
    nothing = client.post(f"{API}/jobs/runs/999999/cancel", headers=bearer(operator))
    assert nothing.status_code == 404
    # Neither comes back to life, and the module runs again at once.
    after = client.post(f"{API}/modules/{module}/jobs/ok/run", headers=bearer(operator)).json()
    assert wait_status(client, operator, after["id"], "succeeded")
    for run in (slow, waiting):
        assert run_status(client, operator, run["id"])["status"] == "cancelled"
    finished = client.post(f"{API}/jobs/runs/{after['id']}/cancel", headers=bearer(operator))
    assert finished.status_code == 409


def test_permissions_viewer_reads_operator_runs_and_cancels(
    client: TestClient, tokens: dict[str, str], module: str
) -> None:
    viewer, operator, admin = tokens["viewer"], tokens["operator"], tokens["admin"]
    run_url = f"{API}/modules/{module}/jobs/ok/run"
    assert client.post(run_url, headers=bearer(viewer)).status_code == 403
    assert client.post(run_url).status_code == 401
    run = client.post(run_url, headers=bearer(operator))
    assert run.status_code == 202
    run_id = run.json()["id"]
    assert client.get(f"{API}/jobs/runs/{run_id}", headers=bearer(viewer)).status_code == 200
    assert client.get(f"{API}/jobs/runs", headers=bearer(viewer)).status_code == 200
    assert client.get(f"{API}/jobs/runs").status_code == 401
    assert client.get(f"{API}/jobs/runs/{run_id}").status_code == 401
    denied = client.post(f"{API}/jobs/runs/{run_id}/cancel", headers=bearer(viewer))
    assert denied.status_code == 403
    assert client.post(f"{API}/jobs/runs/{run_id}/cancel").status_code == 401
    assert client.post(run_url, headers=bearer(admin)).status_code == 202
    wait_status(client, viewer, run_id, "succeeded", "cancelled")


def test_run_now_refuses_unknown_jobs_and_modules_that_are_not_enabled(
    services: Services, client: TestClient, tokens: dict[str, str], module: str
) -> None:
    operator = tokens["operator"]
    unknown = client.post(f"{API}/modules/{module}/jobs/nope/run", headers=bearer(operator))
    assert unknown.status_code == 404
    nobody = client.post(f"{API}/modules/no-such/jobs/ok/run", headers=bearer(operator))
    assert nobody.status_code == 404
    set_status(services, module, Status.DISABLED)
    disabled = client.post(f"{API}/modules/{module}/jobs/ok/run", headers=bearer(operator))
    assert disabled.status_code == 409
    assert disabled.headers["content-type"] == "application/problem+json"
    problem = disabled.json()
    assert (problem["type"], problem["status"]) == ("urn:modhub:problem:conflict", 409)
    assert (problem["module"], problem["moduleStatus"]) == (module, "DISABLED")
    assert problem["detail"] == f"module '{module}' is DISABLED, not ENABLED: its jobs cannot run"
    jobs = client.get(f"{API}/modules/{module}/jobs", headers=bearer(operator)).json()
    assert all(j["nextRuns"] == [] for j in jobs)
