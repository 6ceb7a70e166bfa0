"""Three real nodes on one PostgreSQL database behind HAProxy (round robin, no sticky
sessions, `retries 0`): any node answers anything.

A bundle installed through the balancer is served by every node, asked directly too, and
by a node started afterwards on an empty data dir; an API token, an upload, an operation
polled, a module's log (every node's lines) and a job's run history work through the
balancer whichever node answers; a node killed leaves the rotation and, restarted
on its data dir, joins it again; an upgrade under constant load gives no 5xx; a node whose
data dir is deleted while it runs builds again what it needs; a node killed in the middle
of an install leaves nothing half-done: a live node settles its operation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Cluster, finish, upload
from tests.conftest import bearer
from tests.lifecycle.conftest import TESTLIB, as_bundle, wait_for

MATERIALIZED = "materialized hello@{}"


def write_hello(root: Path, version: str) -> Path:
    """Return the `hello` bundle at `version`: a route answering mh-testlib's version (the
    same major as `version`) and a job, both printing a line to the module's log."""
    folder = root / "sources" / version / "hello"
    (folder / "handlers").mkdir(parents=True)
    manifest = {
        "name": "hello",
        "version": version,
        "displayName": "Hello",
        "dependencies": {"python": [f"{TESTLIB}=={version}"]},
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]},
            "jobs": {"handlers": [{"name": "tick", "handler": "handlers/ping.py"}]},
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest), "utf-8")
    (folder / "handlers" / "ping.py").write_text(
        "import mh_testlib\n\n\ndef handler(arg):\n"
        "    print('hello says hi', flush=True)\n"
        "    return {'testlib': mh_testlib.VERSION}\n"
    )
    return as_bundle(folder, "tar.gz")


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    return write_hello(tmp_path, "1.0.0")


def enable(cluster: Cluster, auth: dict[str, str]) -> dict[str, Any]:
    answer = httpx.put(
        f"{cluster.url}/api/v1/modules/hello/status",
        json={"status": "ENABLED"},
        headers=auth,
        timeout=60,
    )
    return finish(cluster.url, auth, answer)


def ping(url: str, auth: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/m/hello/ping", headers=auth, timeout=180)


def served_by(answers: list[httpx.Response]) -> set[str]:
    return {a.headers.get("x-served-by", "?") for a in answers}


def test_a_bundle_installed_through_the_balancer_is_served_by_every_node(
    cluster: Cluster, hello: Path
) -> None:
    auth = cluster.login()
    assert upload(cluster.url, auth, hello).status_code == 201
    operation = enable(cluster, auth)
    assert operation["status"] == "succeeded", operation

    through = [ping(cluster.url, auth) for _ in range(6)]
    assert [a.status_code for a in through] == [200] * 6, [a.text for a in through]
    assert {json.dumps(a.json()) for a in through} == {'{"testlib": "1.0.0"}'}
    assert served_by(through) == {"a", "b", "c"}  # round robin, no stickiness
    for node in cluster.nodes:  # and each node asked directly
        assert ping(node.url, auth).json() == {"testlib": "1.0.0"}, cluster.output()

    late = cluster.start("late")  # an empty data dir: the database and the key only
    assert ping(late.url, auth).json() == {"testlib": "1.0.0"}
    assert late.output().count(MATERIALIZED.format("1.0.0")) == 1


def test_any_node_answers_anything(cluster: Cluster, hello: Path, tmp_path: Path) -> None:
    # An API token made on the database directly works on every node, and once revoked
    # through the balancer no node takes it.
    made = subprocess.run(
        [sys.executable, "-m", "modhub", "tokens", "create", "--user", "admin", "--name", "ci"],
        env={**cluster.env, "MODHUB_DATA_DIR": str(tmp_path / "cli")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1].strip()
    auth = bearer(token)
    listed = [httpx.get(f"{cluster.url}/api/v1/tokens", headers=auth) for _ in range(3)]
    assert [a.status_code for a in listed] == [200] * 3, [a.text for a in listed]
    assert served_by(listed) == {"a", "b", "c"}

    # An upload through the balancer, its install's operation polled through it.
    assert upload(cluster.url, auth, hello).status_code == 201
    assert enable(cluster, auth)["status"] == "succeeded"

    # The route answers on every node (round robin: each ran it once), and the module's
    # log read through the balancer, whichever node answers, has the line each node's
    # worker printed, with that node and the call's request id; a job run's history is
    # answered by whichever node is asked.
    pings = [ping(cluster.url, auth) for _ in range(3)]
    assert [p.status_code for p in pings] == [200] * 3
    assert served_by(pings) == {"a", "b", "c"}
    nodes = httpx.get(f"{cluster.url}/api/v1/cluster/nodes", headers=auth).json()
    ids = {n["id"] for n in nodes if n["status"] == "up"}
    assert len(ids) == 3, nodes
    calls = {p.headers["x-request-id"] for p in pings}

    def said_hi() -> list[httpx.Response] | None:
        answers = [
            httpx.get(f"{cluster.url}/api/v1/modules/hello/logs", headers=auth) for _ in range(3)
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            body = answer.json()
            hi = [
                e
                for line, e in zip(body["lines"], body["entries"], strict=True)
                if line == "hello says hi"
            ]
            if {e["node"] for e in hi} != ids or not calls <= {e["requestId"] for e in hi}:
                return None
        return answers

    logs = wait_for(said_hi, 30, "every node's log lines through the balancer")
    assert served_by(logs) == {"a", "b", "c"}

    queued = httpx.post(f"{cluster.url}/api/v1/modules/hello/jobs/tick/run", headers=auth)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["id"]

    def finished() -> list[dict[str, Any]] | None:
        runs = [
            httpx.get(f"{node.url}/api/v1/jobs/runs/{run_id}", headers=auth).json()
            for node in cluster.nodes
        ]
        return runs if all(r["status"] not in ("queued", "running") for r in runs) else None

    runs = wait_for(finished, 120, "the job run")
    assert [r["status"] for r in runs] == ["succeeded"] * 3, runs
    assert all(r["result"] == {"testlib": "1.0.0"} for r in runs)
    history = [
        httpx.get(f"{cluster.url}/api/v1/jobs/runs", params={"module": "hello"}, headers=auth)
        for _ in range(3)
    ]
    assert served_by(history) == {"a", "b", "c"}
    for answer in history:
        assert answer.status_code == 200, answer.text
        assert [r["id"] for r in answer.json()["items"]] == [run_id]

    token_id = listed[0].json()[0]["id"]
    revoked = httpx.delete(f"{cluster.url}/api/v1/tokens/{token_id}", headers=auth)
    assert revoked.status_code == 204, revoked.text
    for node in cluster.nodes:
        assert httpx.get(f"{node.url}/api/v1/tokens", headers=auth).status_code == 401


def test_an_upgrade_under_constant_load_gives_no_5xx(cluster: Cluster, tmp_path: Path) -> None:
    auth = cluster.login()
    for version in ("1.0.0", "2.0.0"):
        assert upload(cluster.url, auth, write_hello(tmp_path, version)).status_code == 201
    assert enable(cluster, auth)["status"] == "succeeded"
    for node in cluster.nodes:  # every node serves 1.0.0 before the load starts
        assert ping(node.url, auth).json() == {"testlib": "1.0.0"}

    statuses: Counter[int] = Counter()
    bodies: list[str] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=180) as client:
            while not stop.is_set():
                answer = client.get(f"{cluster.url}/api/v1/m/hello/ping", headers=auth)
                statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    versions[answer.json()["testlib"]] += 1
                else:
                    bodies.append(answer.text)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: sum(statuses.values()) >= 20, 60, "load before the upgrade")
        answer = httpx.post(
            f"{cluster.url}/api/v1/modules/hello/upgrade",
            json={"version": "2.0.0"},
            headers=auth,
            timeout=60,
        )
        assert finish(cluster.url, auth, answer)["status"] == "succeeded"
        for node in cluster.nodes:  # load goes on until every node serves 2.0.0
            wait_for(
                lambda n=node: ping(n.url, auth).json() == {"testlib": "2.0.0"},
                120,
                f"{node.url} to serve 2.0.0",
            )
        seen = versions["2.0.0"]
        wait_for(lambda: versions["2.0.0"] >= seen + 20, 60, "load after the upgrade")
    finally:
        stop.set()
        thread.join(200)

    assert not [s for s in statuses if s >= 500], (statuses, bodies[:5])
    assert set(statuses) == {200}, (statuses, bodies[:5])
    assert versions["1.0.0"] > 0
    assert versions["2.0.0"] > 0


def test_a_node_whose_data_dir_is_deleted_builds_again_what_it_needs(
    cluster: Cluster, hello: Path
) -> None:
    auth = cluster.login()
    assert upload(cluster.url, auth, hello).status_code == 201
    assert enable(cluster, auth)["status"] == "succeeded"
    b = cluster.nodes[1]
    assert ping(b.url, auth).status_code == 200

    shutil.rmtree(b.data_dir)
    for target in ("DISABLED", "ENABLED"):  # its worker stops; the next call needs it all
        answer = httpx.put(
            f"{cluster.url}/api/v1/modules/hello/status", json={"status": target}, headers=auth
        )
        assert finish(cluster.url, auth, answer)["status"] == "succeeded"
        if target == "DISABLED":
            wait_for(lambda: ping(b.url, auth).status_code == 404, 30, "B to stop serving")

    answer = wait_for(
        lambda: (a := ping(b.url, auth)).status_code != 404 and a, 60, "B to serve hello again"
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"testlib": "1.0.0"}
    assert (b.data_dir / "modules" / "hello" / "1.0.0" / "handlers" / "ping.py").is_file()
    through = [ping(cluster.url, auth) for _ in range(6)]
    assert [a.status_code for a in through] == [200] * 6


def test_a_node_killed_during_an_install_leaves_nothing_half_done(
    cluster: Cluster, hello: Path
) -> None:
    auth = cluster.login()
    # D holds every install at its last step until it is killed.
    d = cluster.start("d", failpoint="installed")
    assert upload(d.url, auth, hello).status_code == 201
    answer = httpx.put(
        f"{d.url}/api/v1/modules/hello/status", json={"status": "ENABLED"}, headers=auth
    )
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    wait_for(
        lambda: (
            "failpoint installed" in httpx.get(d.url + location, headers=auth).json()["logTail"]
        ),
        60,
        "the install to reach its failpoint",
    )
    cluster.kill(d)

    def settled() -> dict[str, Any] | None:
        view: dict[str, Any] = httpx.get(cluster.url + location, headers=auth).json()
        return view if view["status"] != "running" else None

    operation = wait_for(settled, 60, "a live node to settle the operation")
    assert operation["status"] == "failed", operation
    assert "interrupted" in operation["error"]
    module = httpx.get(f"{cluster.url}/api/v1/modules/hello", headers=auth).json()
    assert module["status"] == "REGISTERED", module
    assert "enable again" in module["lastError"]
    # Nothing half-done: enabling again through the balancer installs it and every node
    # serves it.
    assert enable(cluster, auth)["status"] == "succeeded"
    for node in cluster.nodes:
        assert ping(node.url, auth).json() == {"testlib": "1.0.0"}


def test_a_killed_node_leaves_the_rotation_and_a_restarted_one_joins_again(
    cluster: Cluster, hello: Path
) -> None:
    auth = cluster.login()
    assert upload(cluster.url, auth, hello).status_code == 201
    assert enable(cluster, auth)["status"] == "succeeded"
    b = cluster.nodes[1]
    assert ping(b.url, auth).status_code == 200  # materialized on B's data dir
    cluster.kill(b)

    # Once the health check marks it down, every answer comes from the two left.
    def rotation_without_b() -> bool:
        answers = [ping(cluster.url, auth) for _ in range(4)]
        return all(a.status_code == 200 for a in answers) and served_by(answers) == {"a", "c"}

    wait_for(rotation_without_b, 30, "the balancer to leave the killed node out")

    again = cluster.restart(b)  # its data dir still holds the module: nothing to rebuild
    wait_for(
        lambda: "b" in served_by([ping(cluster.url, auth) for _ in range(3)]),
        30,
        "the restarted node to be back in the rotation",
    )
    assert ping(again.url, auth).json() == {"testlib": "1.0.0"}
    assert MATERIALIZED.format("1.0.0") not in again.output()
