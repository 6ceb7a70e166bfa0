"""A module route answers 200 through a whole upgrade: the old version until the switch,
then the new one. Runs the real app (route sync poller, worker pool, module workers) with
an environment build held open by the test. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modhub.api.app import create_app
from modhub.db import Database
from modhub.db import upgrade as upgrade_schema
from modhub.lifecycle import service as lifecycle_service
from modhub.lifecycle.bundle import pack_folder
from modhub.lifecycle.environment import create_env
from modhub.registry import Status
from modhub.services import Services
from tests.conftest import PASSWORD, bearer, start_server, stop_server
from tests.lifecycle.conftest import ACTOR, wait_for, write_module
from tests.packages import build_wheel

ROUTE = "/api/v1/m/upmod/ping"
GATE_TIMEOUT = 60.0  # never reached unless the test is broken: it opens the gate itself


def refusals(answers: list[tuple[int, str]]) -> dict[int, tuple[int, str]]:
    """Return, per status other than 200, how many answers had it and the first one's body."""
    out: dict[int, tuple[int, str]] = {}
    for status, body in answers:
        if status != 200:
            count, first = out.get(status, (0, body))
            out[status] = (count + 1, first)
    return out


class Gate:
    """Holds an environment build until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def wrap(self, create_env: Any) -> Any:
        def held(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            if not self.opened.wait(GATE_TIMEOUT):
                raise RuntimeError("the test never opened the gate")
            return create_env(*args, **kwargs)

        return held


def test_a_route_answers_200_through_a_slow_upgrade(
    services: Services,
    sources: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lifecycle = services.lifecycle
    lifecycle.add_bundle(write_module(sources, "upmod", "1.0.0"), actor=ACTOR)
    done, _, _ = lifecycle.set_status("upmod", Status.ENABLED, actor=ACTOR)
    assert done
    lifecycle.add_bundle(
        write_module(sources, "upmod", "1.1.0", python=["mh-testlib==2.0.0"]), actor=ACTOR
    )
    gate = Gate()
    monkeypatch.setattr(lifecycle_service, "create_env", gate.wrap(create_env))
    loads: list[tuple[int, str]] = []
    real_load = services.sync.load

    def counted_load() -> Any:
        table = real_load()
        loads.append((len(loads), services.registry.get("upmod").status))
        return table

    monkeypatch.setattr(services.sync, "load", counted_load)
    services.auth.create_user("watcher", "viewer", "watcher-password")
    token = services.auth.create_api_token("watcher")
    answers: list[tuple[int, str]] = []

    with TestClient(create_app(services=services)) as client:

        def poll() -> tuple[int, str]:
            response = client.get(ROUTE, headers=bearer(token))
            answer = (response.status_code, response.text)
            answers.append(answer)
            time.sleep(0.01)  # one request every 10 ms, as a client polling would
            return answer

        assert poll() == (200, '{"version":"1.0.0"}')
        upgrade = threading.Thread(
            target=lifecycle.upgrade, args=("upmod", "1.1.0"), kwargs={"actor": ACTOR}
        )
        upgrade.start()
        try:
            wait_for(lambda: poll() and gate.entered.is_set(), what="the environment build")
            # Hold the build until the route sync's poller has reloaded the whole table
            # while the module is UPDATING (the reload that used to drop it).
            seen = len(loads)
            # Wake it, as another node's change would: on PostgreSQL this process's own
            # notification may have reloaded the table already, before `seen`, and then
            # the poller finds nothing new to reload.
            services.sync.wake()
            wait_for(
                lambda: poll() and any(s == Status.UPDATING for _, s in loads[seen:]),
                what="a reload of the route table during the upgrade",
            )
            for _ in range(10):
                poll()
        finally:
            gate.opened.set()
            upgrade.join(GATE_TIMEOUT)
        wait_for(lambda: poll()[1] == '{"version":"1.1.0"}', what="the new version")
        for _ in range(10):
            poll()

    assert services.registry.get("upmod").version == "1.1.0"
    assert {status for status, _ in answers} == {200}, refusals(answers)
    bodies = [body for _, body in answers]
    switch = bodies.index('{"version":"1.1.0"}')
    assert set(bodies[:switch]) == {'{"version":"1.0.0"}'}
    assert set(bodies[switch:]) == {'{"version":"1.1.0"}'}


# -- the same on a live server, its environment build waiting for a loopback index -------------


class GatedIndex:
    """A PEP 503 index on loopback serving one wheel, whose download waits for `opened`."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.requested = threading.Event()
        self.opened = threading.Event()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                project = wheel.name.split("-")[0].replace("_", "-")
                if self.path.rstrip("/") == f"/simple/{project}":
                    body = f'<a href="/files/{wheel.name}">{wheel.name}</a>'.encode()
                    self._send(body, "text/html")
                elif self.path == f"/files/{wheel.name}":
                    index.requested.set()
                    index.opened.wait(GATE_TIMEOUT)
                    self._send(wheel.read_bytes(), "application/octet-stream")
                else:
                    self.send_error(404)

            def do_HEAD(self) -> None:
                if self.path == f"/files/{wheel.name}":
                    self._send(wheel.read_bytes(), "application/octet-stream", head=True)
                else:
                    self.send_error(404)

            def _send(self, body: bytes, content_type: str, head: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_live_server_answers_200_through_a_slow_upgrade(
    tmp_path: Path, database_url: str, sources: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    index = GatedIndex(build_wheel(wheels, "mh-gated", "1.0.0"))
    if not database_url.startswith("sqlite"):
        db = Database(database_url)
        upgrade_schema(db.engine)
        db.dispose()
    server = start_server(
        tmp_path / "data",
        database_url,
        extra_env={"MODHUB_PIP_INDEX_URL": index.url, "MODHUB_OPERATION_WAIT_SECONDS": "0"},
    )
    answers: list[tuple[int, str]] = []
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
            login = client.post("/auth/login", json={"username": "admin", "password": PASSWORD})
            client.headers.update(bearer(login.json()["accessToken"]))
            for version, python in (("1.0.0", None), ("1.1.0", ["mh-gated==1.0.0"])):
                bundle = pack_folder(
                    write_module(sources, "upmod", version, python=python),
                    sources / f"upmod-{version}.tar.gz",
                )
                with bundle.open("rb") as stream:
                    files = {"file": (bundle.name, stream, "application/gzip")}
                    assert client.post("/modules/bundles", files=files).status_code == 201
                if version == "1.0.0":
                    enabled = client.put("/modules/upmod/status", json={"status": "ENABLED"})
                    assert enabled.status_code in (200, 202), enabled.text
                    wait_for(
                        lambda: client.get("/modules/upmod").json()["status"] == "ENABLED",
                        what="upmod enabled",
                    )

            def poll() -> tuple[int, str]:
                response = client.get("/m/upmod/ping")
                answers.append((response.status_code, response.text))
                time.sleep(0.01)
                return answers[-1]

            wait_for(lambda: poll()[0] == 200, what="the old version serving")
            started = client.post("/modules/upmod/upgrade", json={"version": "1.1.0"})
            assert started.status_code == 202, started.text
            wait_for(lambda: poll() and index.requested.is_set(), what="the wheel download")
            # The route sync reloads the table at most a second after the registry moved;
            # the build is held for 150 polls (over 1.5 s), so that reload falls inside it.
            for _ in range(150):
                poll()
            index.opened.set()
            wait_for(lambda: poll()[1] == '{"version":"1.1.0"}', what="the new version")
            for _ in range(20):
                poll()
    finally:
        index.close()
        stop_server(server)

    assert {status for status, _ in answers} == {200}, refusals(answers)
    bodies = [body for _, body in answers]
    switch = bodies.index('{"version":"1.1.0"}')
    assert set(bodies[:switch]) == {'{"version":"1.0.0"}'}
    assert set(bodies[switch:]) == {'{"version":"1.1.0"}'}
