"""SIGTERM to a real `modhub serve`: the listening socket closes at once (a new connection
is refused), a module request in flight answers 200, a job run in flight finishes, both
within MODHUB_SHUTDOWN_GRACE_SECONDS; a run still going at the deadline is failed as
interrupted with its next attempt queued for any node; the process then exits cleanly.
SQLite and PostgreSQL.

The handlers wait for a key of their module's store that the test writes straight into the
database (the server takes no new connection by then)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from modhub.db import Database
from modhub.db.models import JobRun
from modhub.jobs.store import INTERRUPTED
from modhub.store.service import ModuleStore
from tests.conftest import PASSWORD, SECRET, LiveServer, bearer, free_port
from tests.jobs.conftest import wait_for

MODULE = "drain"
GRACE = 6  # seconds; the held run is interrupted this long after the signal
WAIT_FOR_GO = (
    "import time\n\n\n"
    "def wait(services):\n"
    "    deadline = time.monotonic() + 120\n"
    "    while not services.store.get('go') and time.monotonic() < deadline:\n"
    "        time.sleep(0.02)\n"
    "    return bool(services.store.get('go'))\n"
)
HANDLERS = {
    "handlers/common.py": WAIT_FOR_GO,
    "handlers/slow.py": (
        "from handlers.common import wait\n\n\n"
        "def handler(request):\n"
        "    request.store.set('slow', 'started')\n"
        "    return {'released': wait(request)}\n"
    ),
    "jobs/finishes.py": (
        "from handlers.common import wait\n\n\n"
        "def handler(context):\n"
        "    context.store.set('finishes', 'started')\n"
        "    return {'released': wait(context)}\n"
    ),
    "jobs/holds.py": (
        "import time\n\n\n"
        "def handler(context):\n"
        "    context.store.set('holds', 'started')\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
    ),
}
MANIFEST = {
    "name": MODULE,
    "version": "1.0.0",
    "displayName": "Drain",
    "capabilities": {
        "api": {"routes": [{"method": "GET", "path": "/slow", "handler": "handlers/slow.py"}]},
        "jobs": {
            "handlers": [
                {"name": "finishes", "handler": "jobs/finishes.py", "timeout": 120000},
                {"name": "holds", "handler": "jobs/holds.py", "timeout": 120000, "retries": 1},
            ]
        },
    },
}


def write_module(root: Path) -> Path:
    folder = root / MODULE
    for path, text in HANDLERS.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / "handlers" / "__init__.py").write_text("")
    (folder / "module.json").write_text(json.dumps(MANIFEST))
    return root


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """Yield `modhub serve --examples` with the drain module enabled, a grace of GRACE s."""
    if not database_url.startswith("sqlite"):
        from modhub.db import upgrade

        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODHUB_", "OTEL_"))}
    env.update(
        MODHUB_DATA_DIR=str(data_dir),
        MODHUB_SECRET_KEY=SECRET,
        MODHUB_ADMIN_PASSWORD=PASSWORD,
        MODHUB_DATABASE_URL=database_url,
        MODHUB_PIP_OFFLINE="true",
        MODHUB_SHUTDOWN_GRACE_SECONDS=str(GRACE),
    )
    log = tmp_path / "serve.log"
    examples = write_module(tmp_path / "examples")
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port), "--examples", str(examples)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    live = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)

    def healthy() -> bool:
        assert process.poll() is None, live.output()
        try:
            return httpx.get(live.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 120, "the server to answer")
    yield live
    if process.poll() is None:
        process.kill()
        process.wait()


def refused(port: int) -> bool:
    """Return whether a new connection to `port` is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_work_in_flight_finish_and_hands_the_rest_back(
    server: LiveServer, database_url: str
) -> None:
    login = httpx.post(
        server.url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    api = httpx.Client(
        base_url=server.url + "/api/v1", headers=bearer(login.json()["accessToken"]), timeout=30
    )
    assert api.get(f"/modules/{MODULE}").json()["status"] == "ENABLED", server.output()
    runs = {}
    for job in ("holds", "finishes"):
        answer = api.post(f"/modules/{MODULE}/jobs/{job}/run")
        assert answer.status_code == 202, answer.text
        runs[job] = answer.json()["id"]

    slow: dict[str, Any] = {}

    def call_slow() -> None:
        try:
            response = httpx.get(
                server.url + f"/api/v1/m/{MODULE}/slow", headers=api.headers, timeout=60
            )
            slow["response"] = response
        except httpx.HTTPError as exc:
            slow["error"] = exc

    caller = threading.Thread(target=call_slow)
    caller.start()
    for key in ("holds", "finishes", "slow"):  # all three handlers are running
        wait_for(
            lambda key=key: api.get(f"/modules/{MODULE}/store/{key}").status_code == 200,
            60,
            f"{key} to start",
        )
    api.close()

    server.process.send_signal(signal.SIGTERM)
    port = int(server.url.rsplit(":", 1)[1])
    wait_for(lambda: refused(port), 10, "the listening socket to close")
    assert caller.is_alive()  # the request in flight is still waiting: nothing cut it off
    assert server.process.poll() is None

    db = Database(database_url)
    try:
        ModuleStore(db).set(MODULE, "go", True, quota_bytes=1024 * 1024)  # release them
        caller.join(60)
        assert "error" not in slow, slow
        assert slow["response"].status_code == 200, slow["response"].text
        assert slow["response"].json() == {"released": True}

        # uvicorn ends a graceful stop by the signal's own default action: killed by SIGTERM.
        assert server.process.wait(GRACE + 60) == -signal.SIGTERM, server.output()
        with db.read() as session:
            rows = {
                (r.job, r.attempt): r
                for r in session.scalars(select(JobRun).where(JobRun.module == MODULE))
            }
    finally:
        db.dispose()
    finished = rows[("finishes", 1)]
    assert (finished.status, finished.result) == ("succeeded", {"value": {"released": True}})
    held = rows[("holds", 1)]
    assert (held.id, held.status, held.error) == (runs["holds"], "failed", INTERRUPTED)
    retry = rows[("holds", 2)]
    assert (retry.status, retry.trigger, retry.owner) == ("queued", "retry", None)
    output = server.output()
    assert "Application shutdown complete." in output
    assert "1 job run(s) still going after 6 s: interrupted" in output
    assert "Traceback" not in output.split("Shutting down", 1)[-1]
