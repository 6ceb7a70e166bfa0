"""Nodes materialize what they run from the bundles in the database: real `modhub serve`
nodes on one PostgreSQL database, each with its own data dir and port, the same secret key.

A module installed through node A is served by a node that was running before the
install (with --prefetch: before any call), runs its job on a node that never saw it, and
answers concurrent first calls on a node started afterwards on an empty data dir, which
materializes it once. A requirement a node cannot install answers 503 with the reason,
remembered rather than retried on every call; a bundle whose bytes do not match its sha256
is refused; a node whose data dir is deleted while it runs builds it again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from modhub.db import Database, upgrade
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import PASSWORD, SECRET, LiveServer, bearer, start_server, stop_server
from tests.lifecycle.conftest import TESTLIB, as_bundle, cheap_password_hashes, wait_for, wheels

# The session's test wheels (mh-testlib 1.0.0 and 2.0.0); argon2 at its lowest cost.
__all__ = ["cheap_password_hashes", "wheels"]

MATERIALIZED = "materialized hello@1.0.0"
Start = Callable[..., LiveServer]


@pytest.fixture
def cluster_url(postgres_url: str) -> str:
    """Return a fresh, migrated PostgreSQL database for the nodes."""
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    return postgres_url


@pytest.fixture
def start(tmp_path: Path, cluster_url: str, wheels: Path) -> Iterator[Start]:
    """Yield `start(name, links=wheels, **env)`: a node on the cluster's database with its
    own data dir, installing offline from `links`; every node is stopped afterwards."""
    started: list[LiveServer] = []

    def node(name: str, links: Path = wheels, **env: str) -> LiveServer:
        extra = {
            "MODHUB_PIP_OFFLINE": "true",
            "MODHUB_PIP_FIND_LINKS": json.dumps([str(links)]),
            "MODHUB_SCHEDULER": "false",
            **{f"MODHUB_{key.upper()}": value for key, value in env.items()},
        }
        server = start_server(tmp_path / name / "data", cluster_url, extra)
        started.append(server)
        return server

    yield node
    for server in started:
        stop_server(server)


@pytest.fixture
def module(tmp_path: Path) -> Path:
    """Return the `hello` bundle: a route and a job that import mh-testlib 1.0.0."""
    folder = tmp_path / "sources" / "hello"
    (folder / "handlers").mkdir(parents=True)
    manifest = {
        "name": "hello",
        "version": "1.0.0",
        "displayName": "Hello",
        "dependencies": {"python": [f"{TESTLIB}==1.0.0"]},
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]},
            "jobs": {"handlers": [{"name": "tick", "handler": "handlers/tick.py"}]},
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest), "utf-8")
    code = "import mh_testlib\n\n\ndef handler(arg):\n    return {'testlib': mh_testlib.VERSION}\n"
    (folder / "handlers" / "ping.py").write_text(code)
    (folder / "handlers" / "tick.py").write_text(code)
    return as_bundle(folder, "tar.gz")


def login(node: LiveServer) -> dict[str, str]:
    """Return the admin's bearer header, from a login on `node` (valid on every node)."""
    answer = httpx.post(
        f"{node.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return bearer(answer.json()["accessToken"])


def install(node: LiveServer, auth: dict[str, str], bundle: Path) -> None:
    """Upload `bundle` through `node` and enable it there (which installs it)."""
    with bundle.open("rb") as stream:
        uploaded = httpx.post(
            f"{node.url}/api/v1/modules/bundles",
            files={"file": (bundle.name, stream, "application/octet-stream")},
            headers=auth,
            timeout=60,
        )
    assert uploaded.status_code == 201, uploaded.text
    enabled = httpx.put(
        f"{node.url}/api/v1/modules/hello/status",
        json={"status": "ENABLED"},
        headers=auth,
        timeout=60,
    )
    assert enabled.status_code in (200, 202), enabled.text
    wait_for(lambda: status(node, auth) == "ENABLED", 120, "hello to be enabled")


def status(node: LiveServer, auth: dict[str, str]) -> str:
    return str(httpx.get(f"{node.url}/api/v1/modules/hello", headers=auth).json()["status"])


def ping(node: LiveServer, auth: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{node.url}/api/v1/m/hello/ping", headers=auth, timeout=120)


def served(node: LiveServer, auth: dict[str, str]) -> httpx.Response | None:
    """Return the route's answer once the node serves the module (not 404 any more)."""
    answer = ping(node, auth)
    return answer if answer.status_code != 404 else None


def test_every_node_serves_a_bundle_installed_through_one(
    start: Start, module: Path, cluster_url: str
) -> None:
    a = start("a")
    b = start("b", prefetch="true")  # running before the install
    auth = login(a)
    install(a, auth, module)
    assert ping(a, auth).json() == {"testlib": "1.0.0"}
    assert MATERIALIZED not in a.output()  # the installing node has it all

    # B materializes it once it sees the change, before any call reaches it.
    wait_for(lambda: MATERIALIZED in b.output(), 120, "node B to prefetch hello")
    assert ping(b, auth).json() == {"testlib": "1.0.0"}

    # A job runs on C, started afterwards on an empty data dir: its runner claims the run.
    c = start("c", scheduler="true")
    queued = httpx.post(f"{a.url}/api/v1/modules/hello/jobs/tick/run", headers=auth)
    assert queued.status_code == 202, queued.text

    def finished() -> dict[str, Any] | None:
        run = httpx.get(f"{c.url}/api/v1/jobs/runs/{queued.json()['id']}", headers=auth).json()
        return run if run["status"] not in ("queued", "running") else None

    run = wait_for(finished, 120, "the job run")
    assert run["status"] == "succeeded", run
    assert run["result"] == {"testlib": "1.0.0"}
    assert c.output().count(MATERIALIZED) == 1

    # Concurrent first calls on D, started afterwards on an empty data dir, wait for one
    # materialization.
    d = start("d")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ping(d, auth), range(8)))
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert d.output().count(MATERIALIZED) == 1

    # E, started afterwards with prefetch, materializes it at start-up, before any call.
    e = start("e", prefetch="true")
    wait_for(lambda: MATERIALIZED in e.output(), 120, "node E to prefetch hello at start-up")


def test_a_requirement_a_node_cannot_install_answers_503_with_the_reason(
    start: Start, module: Path, tmp_path: Path
) -> None:
    a = start("a")
    auth = login(a)
    install(a, auth, module)
    empty = tmp_path / "no-wheels"  # node B's index has none of the module's requirements
    empty.mkdir()
    b = start("b", links=empty)

    first = ping(b, auth)
    again = ping(b, auth)

    assert first.status_code == 503, first.text
    detail = first.json()["detail"]
    assert f"requirement {TESTLIB}==1.0.0 of module 'hello' 1.0.0 could not be installed" in detail
    assert "on node " in detail
    assert again.status_code == 503
    assert again.json()["detail"] == detail  # remembered, not retried on every call
    assert b.output().count("next attempt in") == 1  # one attempt: no restart loop
    assert ping(a, auth).status_code == 200


def test_a_bundle_that_does_not_match_its_sha256_is_refused(
    start: Start, module: Path, cluster_url: str
) -> None:
    a = start("a")
    auth = login(a)
    install(a, auth, module)
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute("UPDATE bundle_chunks SET data = overlay(data placing '\\x00'::bytea from 20)")
    b = start("b")

    answer = ping(b, auth)

    assert answer.status_code == 503, answer.text
    assert "does not match its sha256" in answer.json()["detail"]
    assert not (b.data_dir / "modules" / "hello" / "1.0.0").exists()


def test_a_node_whose_data_dir_is_deleted_builds_again_what_it_needs(
    start: Start, module: Path
) -> None:
    a = start("a")
    auth = login(a)
    install(a, auth, module)
    b = start("b")
    assert ping(b, auth).status_code == 200

    shutil.rmtree(b.data_dir)
    # Stop its worker the public way: disable (wait until B stops serving), enable again.
    for target in ("DISABLED", "ENABLED"):
        changed = httpx.put(
            f"{a.url}/api/v1/modules/hello/status", json={"status": target}, headers=auth
        )
        assert changed.status_code == 200, changed.text
        if target == "DISABLED":
            wait_for(lambda: ping(b, auth).status_code == 404, 30, "B to stop serving hello")

    answer = wait_for(lambda: served(b, auth), 60, "B to serve hello again")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"testlib": "1.0.0"}
    assert b.output().count(MATERIALIZED) == 2
    assert (b.data_dir / "modules" / "hello" / "1.0.0" / "handlers" / "ping.py").is_file()


def test_a_version_removed_and_uploaded_again_is_materialized_again(
    start: Start, module: Path, tmp_path: Path
) -> None:
    a = start("a")
    auth = login(a)
    install(a, auth, module)
    b = start("b")
    assert ping(b, auth).json() == {"testlib": "1.0.0"}

    removed = httpx.delete(f"{a.url}/api/v1/modules/hello", headers=auth, timeout=60)
    assert removed.status_code == 204, removed.text
    wait_for(lambda: ping(b, auth).status_code == 404, 30, "B to stop serving hello")
    folder = tmp_path / "again" / "hello"
    shutil.copytree(tmp_path / "sources" / "hello", folder)
    (folder / "handlers" / "ping.py").write_text("def handler(request):\n    return 'again'\n")
    install(a, auth, as_bundle(folder, "tar.gz"))  # the same version, other code

    answer = wait_for(lambda: served(b, auth), 60, "B to serve hello again")
    assert answer.json() == "again"
    assert b.output().count(MATERIALIZED) == 2


def test_processes_sharing_a_data_dir_materialize_a_version_once(
    start: Start, module: Path, cluster_url: str
) -> None:
    a = start("a")
    auth = login(a)
    install(a, auth, module)
    first = start("b")
    # A second process on the same data dir (as `serve --workers 2` runs them).
    second = start_server(first.data_dir, cluster_url, first.env)
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: ping((first, second)[i % 2], auth), range(8)))
        assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
        assert first.output().count(MATERIALIZED) + second.output().count(MATERIALIZED) == 1
    finally:
        stop_server(second)


@pytest.fixture
def links(tmp_path: Path, wheels: Path) -> Path:
    """Return a wheel folder of this test's own, which the test may empty and fill."""
    folder = tmp_path / "links"
    shutil.copytree(wheels, folder)
    return folder


@pytest.fixture
def settings(tmp_path: Path, database_url: str, links: Path) -> Settings:
    """Return settings of an in-process node installing offline from `links`."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        admin_password=PASSWORD,
        pip_offline=True,
        pip_find_links=[str(links)],
        operation_wait_seconds=60,
    )


def test_a_failure_is_answered_until_its_backoff_ends_then_tried_again(
    client: TestClient,
    tokens: dict[str, str],
    services: Services,
    module: Path,
    links: Path,
    tmp_path: Path,
) -> None:
    now = [1000.0]
    services.materializer.clock = lambda: now[0]
    auth = bearer(tokens["admin"])
    with module.open("rb") as stream:
        uploaded = client.post(
            "/api/v1/modules/bundles", files={"file": (module.name, stream)}, headers=auth
        )
    assert uploaded.status_code == 201, uploaded.text
    status = "/api/v1/modules/hello/status"
    assert client.put(status, json={"status": "ENABLED"}, headers=auth).status_code == 200
    assert client.get("/api/v1/m/hello/ping", headers=auth).status_code == 200
    # The environment goes (its worker with it) and the index no longer has the requirement.
    assert client.put(status, json={"status": "DISABLED"}, headers=auth).status_code == 200
    shutil.rmtree(services.lifecycle.layout.env("hello", "1.0.0"))
    hidden = tmp_path / "hidden"
    links.rename(hidden)
    links.mkdir()
    assert client.put(status, json={"status": "ENABLED"}, headers=auth).status_code == 200

    failed = client.get("/api/v1/m/hello/ping", headers=auth)
    assert failed.status_code == 503, failed.text
    assert "could not be installed on node" in failed.json()["detail"]
    assert services.materializer.snapshot()["lastError"] == failed.json()["detail"]
    links.rmdir()
    hidden.rename(links)  # the index has it again, but the failure stands until its backoff
    again = client.get("/api/v1/m/hello/ping", headers=auth)
    assert again.status_code == 503
    assert again.json()["detail"] == failed.json()["detail"]
    now[0] += 4.9
    assert client.get("/api/v1/m/hello/ping", headers=auth).status_code == 503
    now[0] += 0.2

    answer = client.get("/api/v1/m/hello/ping", headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"testlib": "1.0.0"}
    assert services.materializer.snapshot() == {"materialized": ["hello@1.0.0"], "lastError": None}


def test_a_node_serves_ui_files_from_its_own_copy(start: Start, tmp_path: Path) -> None:
    """UI files came from the installing node's folder (the version row's path): gone with
    that node's data dir, or on another machine, they answered 404 on every other node."""
    folder = tmp_path / "sources" / "hello-ui" / "hello"
    (folder / "pages").mkdir(parents=True)
    manifest = {
        "name": "hello",
        "version": "1.0.0",
        "displayName": "Hello",
        "capabilities": {
            "ui": {"pages": [{"path": "/hello", "component": "pages/main.js", "title": "Hi"}]}
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest), "utf-8")
    (folder / "pages" / "main.js").write_text("export default () => 'hi from B';\n")
    a = start("a")
    auth = login(a)
    install(a, auth, as_bundle(folder, "tar.gz"))
    b = start("b")  # an empty data dir
    stop_server(a)
    shutil.rmtree(tmp_path / "a")  # the installing node and its folder are gone
    answer = httpx.get(f"{b.url}/ui/modules/hello/pages/main.js", timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.text == "export default () => 'hi from B';\n"
    assert MATERIALIZED in b.output()
