"""A backup of a running server (writes going on), restored into an empty data dir (and an
empty PostgreSQL database), serves the same modules, config (secrets decrypt under the same
key), job history and module stores; on SQLite and PostgreSQL, through the real commands."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from modhub.api.app import create_app
from modhub.cli import app
from modhub.db import Database
from modhub.keys import SecretBox
from modhub.registry import Registry
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import (
    PASSWORD,
    SECRET,
    _pg_connect,
    bearer,
    stop_server,
)
from tests.jobs.conftest import start_example_server, wait_for


def modhub(env: dict[str, str], *args: str) -> Result:
    """Run the `modhub` command in this process with these MODHUB_* variables (and no other)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MODHUB_")}
    return CliRunner().invoke(app, list(args), env={**unset, **env})


def login(url: str) -> httpx.Client:
    answer = httpx.post(
        url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return httpx.Client(
        base_url=url + "/api/v1", headers=bearer(answer.json()["accessToken"]), timeout=60
    )


def login_app(client: TestClient) -> TestClient:
    answer = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    client.headers.update(bearer(answer.json()["accessToken"]))
    client.base_url = client.base_url.join("/api/v1/")
    return client


def wait_status(api: httpx.Client | TestClient, name: str, status: str) -> None:
    wait_for(lambda: api.get(f"/modules/{name}").json()["status"] == status, what=name)


def run_job(api: httpx.Client, module: str, job: str) -> dict[str, Any]:
    answer = api.post(f"/modules/{module}/jobs/{job}/run")
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/jobs/runs/{run_id}").json()
        return run if run["status"] not in ("queued", "running") else None

    run: dict[str, Any] = wait_for(finished, what=f"run {run_id}")
    assert run["status"] == "succeeded", (run["error"], run.get("log"))
    return run


def served(api: httpx.Client | TestClient) -> dict[str, Any]:
    """Return what a client sees of the installation: modules, runs, VMs, a greeting."""
    modules = api.get("/modules").json()["items"]
    runs = api.get("/jobs/runs", params={"limit": 500}).json()["items"]
    vms = api.get("/m/vmware-vcenter/vms")
    greet = api.get("/m/hello/greet/ann")
    assert vms.status_code == 200, vms.text
    assert greet.status_code == 200, greet.text
    return {
        "modules": sorted((m["name"], m["version"], m["status"]) for m in modules),
        "runs": {r["id"]: (r["module"], r["job"], r["status"], r["result"]) for r in runs},
        "vms": {vm["name"] for vm in vms.json()["items"]},
        "greeting": greet.json(),
    }


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """Yield the URL of a new, empty PostgreSQL database (dropped afterwards)."""
    from tests.conftest import PG_ADMIN_URL

    name = f"modhub_restore_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Writer(threading.Thread):
    """Keeps writing while the backup is taken: VM w-N into vmware's store, then hello's
    greeting G-N in its config, one after the other."""

    def __init__(self, api: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.api, self.done, self.stop, self.error = api, 0, threading.Event(), ""

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            vm = self.api.post("/m/vmware-vcenter/vms", json={"name": f"w-{n}"})
            config = self.api.put(
                "/modules/hello/config",
                json={"config": {"greeting": f"G-{n}", "apiKey": "********"}},
            )
            if vm.status_code != 201 or config.status_code != 200:
                self.error = f"{vm.status_code} {vm.text} {config.status_code} {config.text}"
                return
            self.done = n
            self.stop.wait(0.01)  # a steady stream, not a flood that starves the backup


def test_a_backup_of_a_running_server_restores_into_an_empty_target(
    tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> None:
    server = start_example_server(tmp_path, database_url)
    try:
        api = login(server.url)
        assert (
            api.put(
                "/modules/hello/config",
                json={"config": {"greeting": "G-0", "apiKey": "hello-key-1"}},
            ).status_code
            == 200
        )
        vmware = {"vcenterHost": "vc.example", "vcenterUsername": "ops", "vcenterPassword": "pw-9"}
        answer = api.put("/modules/vmware-vcenter/config", json={"config": vmware})
        assert answer.status_code == 200, answer.text
        answer = api.put(
            "/modules/vmware-vcenter/status", params={"cascade": True}, json={"status": "ENABLED"}
        )
        assert answer.status_code in (200, 202), answer.text
        wait_status(api, "vmware-vcenter", "ENABLED")
        run_job(api, "vmware-vcenter", "sync-inventory")
        run_job(api, "hello", "tick")
        before = served(api)
        assert len(before["vms"]) > 0
        assert len(before["runs"]) == 2

        writer = Writer(login(server.url))
        writer.start()
        wait_for(lambda: writer.done >= 3 or writer.error, what="writes going on")
        backup = tmp_path / "backups" / "modhub.backup"
        env = {"MODHUB_DATA_DIR": str(server.data_dir), "MODHUB_DATABASE_URL": database_url}
        started = writer.done
        made = modhub(env, "backup", str(backup))
        finished = writer.done
        wait_for(lambda: writer.done >= finished + 2 or writer.error, what="more writes")
        writer.stop.set()
        writer.join(60)
        assert not writer.error, writer.error
        assert made.exit_code == 0, made.output
        assert "the secret key is not in this file" in made.output
        assert backup.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in backup.parent.iterdir()] == ["modhub.backup"]  # no temp left
    finally:
        stop_server(server)

    target_url = (
        None if database_url.startswith("sqlite") else request.getfixturevalue("empty_postgres")
    )
    data = tmp_path / "restored"
    env = {"MODHUB_DATA_DIR": str(data), "MODHUB_SECRET_KEY": SECRET}
    if target_url:
        env["MODHUB_DATABASE_URL"] = target_url
    restored = modhub(env, "restore", str(backup))
    assert restored.exit_code == 0, restored.output
    assert "migrated to this version's schema" in restored.output

    url = target_url or f"sqlite:///{data / 'modhub.db'}"
    db = Database(url)
    try:  # config secrets decrypt under the same key
        registry = Registry(db, SecretBox(SECRET))
        hello = registry.config_for_code("hello")
        assert hello["apiKey"] == "hello-key-1"
        assert registry.config_for_code("vmware-vcenter")["vcenterPassword"] == "pw-9"
        greeting = str(hello["greeting"])
    finally:
        db.dispose()

    settings = Settings(data_dir=data, database_url=target_url, secret_key=SECRET, pip_offline=True)
    services = Services.start(settings)  # as `modhub serve` on the restored target
    try:
        with TestClient(create_app(services=services)) as client:
            after = served(login_app(client))
    finally:
        services.close()
    assert after["modules"] == before["modules"]
    for run_id, run in before["runs"].items():  # the history as it was, and the runs since
        assert after["runs"][run_id] == run
    # One moment of the database: the config and the store agree. The writer stores VM w-N
    # before it sets greeting G-N, so with greeting G-N the store holds w-1..w-N, and maybe
    # w-(N+1) (stored, its greeting not yet), nothing later.
    # The snapshot is of a moment while the command ran: after the writes acknowledged before
    # it started, before those acknowledged after it ended (one more may have been committed
    # and not yet acknowledged).
    n = int(greeting.removeprefix("G-"))
    assert started <= n <= finished + 1, (started, n, finished)
    written = after["vms"] - before["vms"]
    assert {f"w-{i}" for i in range(1, n + 1)} <= written <= {f"w-{i}" for i in range(1, n + 2)}
    assert before["vms"] <= after["vms"]
    assert after["greeting"] == {"message": f"{greeting}, ann!", "hasApiKey": True}
