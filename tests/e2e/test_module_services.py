"""Module services end to end: a real `modhub serve`, real workers under bubblewrap, the
real store and module calls, on SQLite and on PostgreSQL. Modules are uploaded as bundles,
as a user would."""

from __future__ import annotations

import json
import shutil
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modhub.db import Database, upgrade
from tests.conftest import start_server, stop_server
from tests.lifecycle.conftest import wait_for
from tests.lifecycle.test_recovery import Node

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"
M = "/m"


def write(root: Path, name: str, routes: dict[str, str], code: str, **manifest: Any) -> Path:
    """Write module `name`: routes `"METHOD /path" → function` of handlers/main.py."""
    folder = root / name
    (folder / "handlers").mkdir(parents=True)
    (folder / "handlers" / "main.py").write_text(textwrap.dedent(code))
    data = {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "capabilities": {
            "api": {
                "routes": [
                    {
                        "method": key.split()[0],
                        "path": key.split()[1],
                        "handler": f"handlers/main.py:{function}",
                    }
                    for key, function in routes.items()
                ]
            },
            **manifest.pop("capabilities", {}),
        },
        **manifest,
    }
    (folder / "module.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[Node]:
    if not database_url.startswith("sqlite"):  # a server database is migrated beforehand
        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    server = start_server(tmp_path / "data", database_url)
    try:
        yield Node(server)
    finally:
        stop_server(server)


def install(node: Node, folder: Path) -> None:
    """Upload a module folder and enable it."""
    node.upload(folder)
    name = json.loads((folder / "module.json").read_text())["name"]
    response = node.http.put(f"/modules/{name}/status", json={"status": "ENABLED"})
    assert response.status_code in (200, 202), response.text
    if response.status_code == 202:
        node.finish(response)
    assert node.module(name)["status"] == "ENABLED"


STORE_CODE = """
    import json, os, signal, struct, threading, time
    from modhub.sdk import QuotaExceeded, Response

    def put(request):
        return {"version": request.store.set(request.query["key"], request.json)}

    def get(request):
        return {"value": request.store.get(request.query["key"])}

    def hit(request):
        return {"n": [request.store.incr("hits") for _ in range(int(request.query["times"]))][-1]}

    def fill(request):
        try:
            request.store.set(request.query["key"], "x" * int(request.query["bytes"]))
        except QuotaExceeded as exc:
            return Response(status=507, json={"error": type(exc).__name__, "message": str(exc)})
        return {"ok": True}

    def die_while_setting(request):
        # The set's frame leaves, then the worker is killed at some point of the write.
        value = {"blob": request.query["fill"] * 400_000}
        threading.Thread(target=request.store.set, args=("torn", value), daemon=True).start()
        time.sleep(float(request.query["after"]))
        os.kill(os.getpid(), signal.SIGKILL)

    def forge(request):
        # Hand-made frames on the protocol pipe, naming the victim in every way a frame can.
        import fcntl
        out = next(
            int(fd) for fd in os.listdir("/proc/self/fd")
            if int(fd) > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
            and fcntl.fcntl(int(fd), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        )
        for rid in [*range(1, 200), 10**9, "victim", None]:
            frame = {"call": 10**6 + (rid if isinstance(rid, int) else 0), "rid": rid,
                     "service": "store", "op": "set", "module": "victim",
                     "args": {"key": "secret", "value": "forged", "module": "victim"}}
            data = json.dumps(frame).encode()
            os.write(out, struct.pack(">I", len(data)) + data)
        return {"mine": request.store.get("secret")}
"""
STORE_ROUTES = {
    "PUT /kv": "put",
    "GET /kv": "get",
    "POST /hit": "hit",
    "POST /fill": "fill",
    "POST /die": "die_while_setting",
    "POST /forge": "forge",
}


def store_module(root: Path, name: str, **manifest: Any) -> Path:
    return write(root, name, STORE_ROUTES, STORE_CODE, **manifest)


def test_each_module_has_a_store_of_its_own(node: Node, tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        install(node, store_module(tmp_path / "src", name))
    assert node.http.put(f"{M}/alpha/kv", params={"key": "k"}, json={"a": 1}).json() == {
        "version": 1
    }
    assert node.http.get(f"{M}/alpha/kv", params={"key": "k"}).json() == {"value": {"a": 1}}
    assert node.http.get(f"{M}/beta/kv", params={"key": "k"}).json() == {"value": None}


def test_forged_frames_never_reach_another_modules_keys(node: Node, tmp_path: Path) -> None:
    for name in ("victim", "forger"):
        install(node, store_module(tmp_path / "src", name))
    node.http.put(f"{M}/victim/kv", params={"key": "secret"}, json="the victim's")
    answer = node.http.post(f"{M}/forger/forge")
    assert answer.status_code == 200, answer.text
    # Whatever the forged frames did, they did it to the forger's own keys.
    assert node.http.get(f"{M}/victim/kv", params={"key": "secret"}).json() == {
        "value": "the victim's"
    }
    assert answer.json()["mine"] in (None, "forged")


def test_no_increment_is_lost(node: Node, tmp_path: Path) -> None:
    job_code = """
        def handler(context):
            return [context.store.incr("hits") for _ in range(100)][-1]
    """
    folder = store_module(
        tmp_path / "src",
        "counter",
        capabilities={
            "jobs": {
                "handlers": [{"name": "count", "handler": "jobs/count.py", "schedule": "0 0 1 1 *"}]
            }
        },
    )
    (folder / "jobs").mkdir()
    (folder / "jobs" / "count.py").write_text(textwrap.dedent(job_code))
    install(node, folder)
    barrier = threading.Barrier(8)

    def requests(_: int) -> int:
        barrier.wait()
        with httpx.Client(base_url=node.http.base_url, headers=node.http.headers) as http:
            return sum(
                http.post(f"{M}/counter/hit", params={"times": "25"}).status_code == 200
                for _ in range(4)
            )

    run = node.http.post("/modules/counter/jobs/count/run")
    assert run.status_code in (200, 201, 202), run.text
    with ThreadPoolExecutor(8) as threads:
        assert sum(threads.map(requests, range(8))) == 32
    run_id = run.json()["id"]
    wait_for(
        lambda: node.http.get(f"/jobs/runs/{run_id}").json()["status"] == "succeeded",
        what="the job run",
    )
    total = node.http.post(f"{M}/counter/hit", params={"times": "1"}).json()["n"]
    assert total == 8 * 4 * 25 + 100 + 1


def test_a_worker_killed_during_a_set_leaves_a_whole_value(node: Node, tmp_path: Path) -> None:
    install(node, store_module(tmp_path / "src", "torn"))
    for attempt, after in enumerate(("0", "0.001", "0.005", "0.02")):
        fill = "ab"[attempt % 2]
        answer = node.http.post(f"{M}/torn/die", params={"fill": fill, "after": after})
        assert answer.status_code in (502, 503), answer.text
        value = wait_for(
            lambda: (
                (r := node.http.get(f"{M}/torn/kv", params={"key": "torn"})).status_code == 200
                and r.json()
            ),
            what="the worker to come back",
        )["value"]
        assert value is None or (set(value) == {"blob"} and len(value["blob"]) == 400_000)
        assert value is None or value["blob"] in ("a" * 400_000, "b" * 400_000)


def test_a_module_over_its_storage_keeps_what_it_had(node: Node, tmp_path: Path) -> None:
    install(node, store_module(tmp_path / "src", "small", runtime={"storageMb": 1}))
    assert node.http.post(f"{M}/small/fill", params={"key": "a", "bytes": "600000"}).json() == {
        "ok": True
    }
    refused = node.http.post(f"{M}/small/fill", params={"key": "b", "bytes": "600000"})
    assert refused.status_code == 507
    assert refused.json()["error"] == "QuotaExceeded"
    assert "1048576 bytes (1.00 MB)" in refused.json()["message"]
    got = node.http.get(f"{M}/small/kv", params={"key": "a"})
    assert got.status_code == 200, got.text[:500]
    kept = got.json()["value"]
    assert kept == "x" * 600_000
    assert node.http.get(f"{M}/small/kv", params={"key": "b"}).json() == {"value": None}


def test_the_vmware_example_keeps_its_inventory_and_asks_core_auth(
    node: Node, tmp_path: Path
) -> None:
    for name in ("core-auth", "vmware-vcenter"):  # copied: an upload packs beside the folder
        shutil.copytree(EXAMPLES / name, tmp_path / "examples" / name)
    install(node, tmp_path / "examples" / "core-auth")
    node.upload(tmp_path / "examples" / "vmware-vcenter")
    config = {"vcenterHost": "vc.example", "vcenterUsername": "ops", "vcenterPassword": "pw"}
    assert node.http.put("/modules/vmware-vcenter/config", json={"config": config}).is_success
    response = node.http.put("/modules/vmware-vcenter/status", json={"status": "ENABLED"})
    if response.status_code == 202:
        node.finish(response)

    before = node.http.get(f"{M}/vmware-vcenter/vms").json()
    assert (before["items"], before["total"]) == ([], 0)
    assert "sync-inventory" in before["hint"]

    run = node.http.post("/modules/vmware-vcenter/jobs/sync-inventory/run").json()
    wait_for(
        lambda: node.http.get(f"/jobs/runs/{run['id']}").json()["status"] == "succeeded",
        what="the sync",
    )
    synced = node.http.get(f"{M}/vmware-vcenter/vms").json()
    assert [vm["name"] for vm in synced["items"]] == ["web-01", "web-02", "db-01"]
    assert "hint" not in synced

    created = node.http.post(f"{M}/vmware-vcenter/vms", json={"name": "app-01", "cpus": 4})
    assert created.status_code == 201, created.text
    assert created.json()["createdBy"] == "admin"
    names = [vm["name"] for vm in node.http.get(f"{M}/vmware-vcenter/vms").json()["items"]]
    assert sorted(names) == ["app-01", "db-01", "web-01", "web-02"]


CALLEE_CODE = """
    def open_route(request):
        return {"caller": request.headers.get("x-modhub-caller"), "user": request.user.username}

    def guarded(request):
        return {"secret": 42}
"""
CALLER_CODE = """
    from modhub.sdk import CallRefused

    def call(request):
        try:
            answer = request.modules.call(request.query["module"], "GET", request.query["path"])
        except CallRefused as refused:
            return {"refused": str(refused)}
        return {"status": answer.status, "json": answer.json}
"""
JOB_CODE = """
    from modhub.sdk import CallRefused

    def handler(context):
        out = {}
        for path in ("/open", "/guarded"):
            try:
                out[path] = context.modules.call("callee", "GET", path).json
            except CallRefused as refused:
                out[path] = str(refused)
        return out
"""


def test_calls_follow_dependencies_status_and_the_users_permissions(
    node: Node, tmp_path: Path
) -> None:
    callee = write(
        tmp_path / "src",
        "callee",
        {"GET /open": "open_route", "GET /guarded": "guarded"},
        CALLEE_CODE,
        permissions=["callee:read"],
    )
    manifest = json.loads((callee / "module.json").read_text())
    manifest["capabilities"]["api"]["routes"][1]["permissions"] = ["callee:read"]
    (callee / "module.json").write_text(json.dumps(manifest))
    install(node, callee)
    caller = write(
        tmp_path / "src",
        "caller",
        {"GET /call": "call"},
        CALLER_CODE,
        dependencies={"modules": {"callee": "^1.0.0"}},
        capabilities={
            "jobs": {
                "handlers": [{"name": "probe", "handler": "jobs/probe.py", "schedule": "0 0 1 1 *"}]
            }
        },
    )
    (caller / "jobs").mkdir()
    (caller / "jobs" / "probe.py").write_text(textwrap.dedent(JOB_CODE))
    install(node, caller)
    install(node, store_module(tmp_path / "src", "stranger"))

    def call(module: str, path: str, http: httpx.Client = node.http) -> dict[str, Any]:
        answer = http.get(f"{M}/caller/call", params={"module": module, "path": path})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    assert call("callee", "/open") == {
        "status": 200,
        "json": {"caller": "caller", "user": "admin"},
    }
    assert call("callee", "/guarded")["json"] == {"secret": 42}  # admin holds every permission
    assert "does not list 'stranger'" in call("stranger", "/kv")["refused"]
    assert "no route GET /nope" in call("callee", "/nope")["refused"]

    # A user without callee:read may use the caller, not reach the guarded route through it.
    created = node.http.post(
        "/users", json={"username": "rita", "password": "correct horse battery", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    token = httpx.post(
        f"{node.server.url}/api/v1/auth/login",
        json={"username": "rita", "password": "correct horse battery"},
    ).json()["accessToken"]
    with httpx.Client(
        base_url=node.http.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as rita:
        assert call("callee", "/open", rita)["json"]["user"] == "rita"
        assert (
            "rita lacks the permission 'callee:read'" in call("callee", "/guarded", rita)["refused"]
        )

    # A job acts as its module: the permissions its manifest declares, none of callee's.
    run = node.http.post("/modules/caller/jobs/probe/run").json()
    done = wait_for(
        lambda: (
            (r := node.http.get(f"/jobs/runs/{run['id']}").json())["status"] == "succeeded" and r
        ),
        what="the probe job",
    )
    assert done["result"]["/open"] == {"caller": "caller", "user": "module:caller"}
    assert "module:caller lacks the permission 'callee:read'" in done["result"]["/guarded"]
