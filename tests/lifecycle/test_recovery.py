"""Crash recovery: a real `modhub serve` is SIGKILLed in the middle of an install, an
upgrade or a removal (held there by the failpoint setting), and the next start-up on the
same data dir and database brings everything back to a stable state.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modhub.db.models import Operation
from modhub.lifecycle import recover
from modhub.lifecycle.bundle import make_read_only, pack_folder
from modhub.registry import Status
from modhub.sandbox.launch import module_uid
from modhub.services import Services
from tests.conftest import PASSWORD, LiveServer, bearer, start_server, stop_server
from tests.lifecycle.conftest import ACTOR, entries, wait_for, write_module
from tests.packages import build_sdist
from tests.sandbox.conftest import processes_of

API = "/api/v1"
INTERRUPTED = "interrupted"
WAIT = 90  # seconds an operation may take on a busy machine


class Node:
    """One `modhub serve` process on the test's data dir and database, and a client of it."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.data = server.data_dir
        token = httpx.post(
            f"{server.url}{API}/auth/login",
            json={"username": "admin", "password": PASSWORD},
            timeout=30,
        ).json()["accessToken"]
        self.http = httpx.Client(base_url=server.url + API, headers=bearer(token), timeout=30)

    def upload(self, folder: Path) -> dict[str, Any]:
        bundle = pack_folder(folder, folder.parent / f"{folder.name}.tar.gz")
        with bundle.open("rb") as stream:
            response = self.http.post("/modules/bundles", files={"file": (bundle.name, stream)})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def module(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/modules/{name}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def operation(self, op_id: str) -> dict[str, Any]:
        response = self.http.get(f"/operations/{op_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def accepted(self, response: httpx.Response) -> str:
        """Return the id of the operation a 202 answer started."""
        assert response.status_code == 202, response.text
        op_id: str = response.json()["id"]
        assert response.headers["location"] == f"{API}/operations/{op_id}"
        return op_id

    def finish(self, response: httpx.Response) -> dict[str, Any]:
        """Wait for the operation a 202 answer started; return it, succeeded."""
        op_id = self.accepted(response)
        done = wait_for(
            lambda: (op := self.operation(op_id))["status"] != "running" and op,
            timeout=WAIT,
            what=f"operation {op_id}",
        )
        assert done["status"] == "succeeded", done
        return dict(done)

    def stop_at(self, response: httpx.Response, step: str) -> str:
        """Wait until the operation a 202 answer started is held at `step`; return its id."""
        op_id = self.accepted(response)

        def held() -> bool:
            op = self.operation(op_id)
            assert op["status"] == "running", op
            running = [s["name"] for s in op["steps"] if s["status"] == "running"]
            return step in running or f"failpoint {step}: stopping here" in op["logTail"]

        wait_for(held, timeout=WAIT, what=f"operation {op_id} to reach {step}")
        return op_id

    def audit(self) -> list[dict[str, Any]]:
        """Return every audit entry, oldest first."""
        items: list[dict[str, Any]] = self.http.get("/audit", params={"limit": 500}).json()["items"]
        return items[::-1]

    def crash(self) -> None:
        """SIGKILL the server, as a power cut would."""
        self.http.close()
        self.server.process.kill()
        self.server.process.wait(10)


@pytest.fixture
def boot(tmp_path: Path, database_url: str, wheels: Path) -> Iterator[Any]:
    """Yield a function that starts a server on the test's data dir and database,
    optionally held at a failpoint; every server is stopped at the end."""
    started: list[LiveServer] = []
    base = {
        "MODHUB_PIP_OFFLINE": "true",
        "MODHUB_PIP_FIND_LINKS": json.dumps([str(wheels)]),
        "MODHUB_OPERATION_WAIT_SECONDS": "0",
    }

    def start(failpoint: str | None = None, env: dict[str, str] | None = None) -> Node:
        extra = {**base, **(env or {}), **({"MODHUB_FAILPOINT": failpoint} if failpoint else {})}
        server = start_server(tmp_path / "data", database_url, extra_env=extra)
        started.append(server)
        return Node(server)

    yield start
    for server in started:
        stop_server(server)


def system_actions(node: Node, since: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Return (action, target, detail) of the audit entries by `system` after entry `since`."""
    return [
        (e["action"], e["target"], e["detail"])
        for e in node.audit()
        if e["id"] > since and e["actor"] == "system"
    ]


def last_audit_id(node: Node) -> int:
    entries_ = node.audit()
    return int(entries_[-1]["id"]) if entries_ else 0


def assert_interrupted(node: Node, op_id: str) -> None:
    op = node.operation(op_id)
    assert op["status"] == "failed", op
    assert INTERRUPTED in op["error"], op
    assert op["finishedAt"] is not None


# -- crashes of a real server ----------------------------------------------------------------


def test_install_interrupted_is_undone_and_leftovers_swept(boot: Any, sources: Path) -> None:
    node = boot("installed")
    node.upload(write_module(sources, "demo"))
    op_id = node.stop_at(
        node.http.put("/modules/demo/status", json={"status": "ENABLED"}), "installed"
    )
    data = node.data
    assert (data / "envs" / "demo" / "1.0.0" / "bin" / "python").exists()
    assert node.module("demo")["status"] == "INSTALLING"
    # Leftovers of other crashes: an upload being unpacked, code and an env no row owns.
    (data / "staging" / "0123abcd" / "module").mkdir(parents=True)
    (data / "staging" / "0123abcd" / "module" / "module.json").write_text("{}")
    ghost = data / "modules" / "ghost" / "1.0.0"
    ghost.mkdir(parents=True)
    (ghost / "module.json").write_text("{}")
    make_read_only(ghost)
    (data / "envs" / "ghost" / "1.0.0" / "bin").mkdir(parents=True)
    before = last_audit_id(node)
    node.crash()

    node = boot()

    module = node.module("demo")
    assert module["status"] == "REGISTERED"
    assert INTERRUPTED in module["lastError"]
    assert entries(data / "envs") == []
    assert entries(data / "staging") == []
    assert entries(data / "modules") == ["demo"]  # its code stays, ghost is gone
    assert node.http.get("/modules/demo/verify").json() == {"intact": True, "changes": []}
    assert_interrupted(node, op_id)
    actions = system_actions(node, before)
    assert ("recovery.operation", "demo", {"operation": op_id, "kind": "enable"}) in actions
    assert (
        "module.status",
        "demo",
        {"from": "INSTALLING", "to": "REGISTERED", "error": module["lastError"]},
    ) in actions
    cleanup = {
        (target, d["removed"]) for action, target, d in actions if action == "recovery.cleanup"
    }
    assert cleanup == {
        (None, "removed staging folder 0123abcd"),
        ("ghost", "removed orphaned modules/ghost/1.0.0"),
        ("ghost", "removed orphaned envs/ghost/1.0.0"),
    }

    # The module can be installed again.
    enabled = node.finish(node.http.put("/modules/demo/status", json={"status": "ENABLED"}))
    assert enabled["kind"] == "enable"
    assert node.module("demo")["status"] == "ENABLED"


def test_a_killed_install_takes_its_build_with_it(
    boot: Any, sources: Path, wheels: Path, tmp_path: Path
) -> None:
    # A build step that runs until a flag file goes: the server is SIGKILLed meanwhile.
    index = tmp_path / "slow-index"
    index.mkdir()
    hold = index / "hold"
    hold.write_text("")
    build_sdist(
        index,
        "mh-slow",
        "1.0",
        f"import os, time\nwhile os.path.exists({str(hold)!r}):\n    time.sleep(0.05)",
    )
    env = {
        "MODHUB_PIP_ALLOW_SOURCE_BUILDS": "true",
        "MODHUB_PIP_FIND_LINKS": json.dumps([str(wheels), str(index)]),
    }
    name = f"slow-{os.getpid()}"
    node = boot(env=env)
    node.upload(write_module(sources, name, python=["mh-slow==1.0"]))
    node.accepted(node.http.put(f"/modules/{name}/status", json={"status": "ENABLED"}))
    uid = module_uid(name)
    wait_for(lambda: processes_of(uid), what="the install running as the module's uid")
    node.crash()
    # bubblewrap dies with the server, and its PID namespace with it: no build lives on
    # to re-create the environment that recovery removes.
    wait_for(lambda: not processes_of(uid), timeout=15, what="the build to die with the server")
    hold.unlink()

    node = boot(env=env)
    assert node.module(name)["status"] == "REGISTERED"
    enabled = node.finish(node.http.put(f"/modules/{name}/status", json={"status": "ENABLED"}))
    assert enabled["kind"] == "enable"
    assert node.module(name)["status"] == "ENABLED"
    assert node.http.get(f"/m/{name}/ping").json() == {"version": "1.0.0"}


def test_upgrade_interrupted_before_switch_keeps_the_old_version(boot: Any, sources: Path) -> None:
    config = {"greeting": {"type": "string", "default": "hello"}}
    node = boot("before-switch")
    node.upload(write_module(sources, "demo", config=config))
    node.finish(node.http.put("/modules/demo/status", json={"status": "ENABLED"}))
    node.http.put("/modules/demo/config", json={"config": {"greeting": "hi"}})
    node.upload(write_module(sources, "demo", "1.1.0", config=config, python=["mh-testlib==1.0.0"]))
    op_id = node.stop_at(
        node.http.post("/modules/demo/upgrade", json={"version": "1.1.0"}), "before-switch"
    )
    data = node.data
    assert node.module("demo")["status"] == "UPDATING"
    assert entries(data / "envs" / "demo") == ["1.0.0", "1.1.0"]
    before = last_audit_id(node)
    node.crash()

    node = boot()

    module = node.module("demo")
    assert (module["version"], module["status"]) == ("1.0.0", "ENABLED")
    assert module["previousVersion"] is None
    assert module["config"] == {"greeting": "hi"}
    assert INTERRUPTED in module["lastError"]
    assert entries(data / "envs" / "demo") == ["1.0.0"]
    assert entries(data / "modules" / "demo") == ["1.0.0", "1.1.0"]  # 1.1.0 stays available
    assert_interrupted(node, op_id)
    actions = system_actions(node, before)
    assert ("recovery.operation", "demo", {"operation": op_id, "kind": "upgrade"}) in actions
    assert (
        "module.status",
        "demo",
        {"from": "UPDATING", "to": "ENABLED", "error": module["lastError"]},
    ) in actions
    assert ("recovery.cleanup", "demo", {"removed": "removed orphaned envs/demo/1.1.0"}) in actions

    # The upgrade can be tried again, and now goes through.
    node.finish(node.http.post("/modules/demo/upgrade", json={"version": "1.1.0"}))
    module = node.module("demo")
    assert (module["version"], module["status"], module["lastError"]) == ("1.1.0", "ENABLED", None)


def test_remove_interrupted_is_completed(boot: Any, sources: Path) -> None:
    node = boot("removing")
    node.upload(write_module(sources, "demo"))
    node.finish(node.http.put("/modules/demo/status", json={"status": "ENABLED"}))
    op_id = node.stop_at(node.http.delete("/modules/demo"), "removing")
    data = node.data
    assert node.module("demo")["status"] == "REMOVING"
    assert (data / "modules" / "demo" / "1.0.0").is_dir()
    assert (data / "envs" / "demo" / "1.0.0").is_dir()
    before = last_audit_id(node)
    node.crash()

    node = boot()

    assert node.http.get("/modules/demo").status_code == 404
    assert entries(data / "modules") == []
    assert entries(data / "envs") == []
    assert_interrupted(node, op_id)
    actions = system_actions(node, before)
    assert ("recovery.operation", "demo", {"operation": op_id, "kind": "remove"}) in actions
    assert ("module.remove", "demo", {"version": "1.0.0"}) in actions
    # The name is free again.
    assert node.upload(write_module(sources / "again", "demo"))["status"] == "REGISTERED"


# -- recover() in process --------------------------------------------------------------------


def running_operation(services: Services, module: str, owner: str, **detail: Any) -> str:
    """Record a `running` operation of `module` started by `owner`; return its id."""
    op_id = os.urandom(16).hex()
    with services.db.write() as session:
        session.add(
            Operation(
                id=op_id,
                kind="upgrade" if "fromStatus" in detail else "enable",
                module=module,
                status="running",
                actor=ACTOR,
                detail={**detail, "owner": owner},
                steps=[],
                log="",
            )
        )
    return op_id


def operation_status(services: Services, op_id: str) -> str:
    return services.operations.get(op_id).status


def dead_pid() -> int:
    """Return the pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_recover_leaves_operations_of_live_processes_alone(services: Services) -> None:
    registry = services.registry
    for name in ("local", "remote"):
        registry.register({"name": name, "version": "1.0.0", "displayName": name}, actor=ACTOR)
        registry.transition(name, Status.INSTALLING, actor=ACTOR)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = running_operation(services, "local", f"{socket.gethostname()}:{alive.pid}")
        theirs = running_operation(services, "remote", "another-machine:1")

        assert recover(services.lifecycle) == []

        assert operation_status(services, mine) == "running"
        assert operation_status(services, theirs) == "running"
        assert registry.get("local").status == Status.INSTALLING
        assert registry.get("remote").status == Status.INSTALLING
    finally:
        alive.kill()
        alive.wait()

    done = recover(services.lifecycle)

    assert operation_status(services, mine) == "failed"
    assert INTERRUPTED in (services.operations.get(mine).error or "")
    assert registry.get("local").status == Status.REGISTERED
    assert operation_status(services, theirs) == "running"
    assert registry.get("remote").status == Status.INSTALLING
    assert "local: install undone, back to REGISTERED" in done


def test_recover_keeps_what_a_live_process_is_still_making(services: Services) -> None:
    """Two processes share the data dir: one starting up must not sweep away the other's
    staging folder, nor the environment its running operation is building."""
    layout = services.lifecycle.layout
    host = socket.gethostname()
    services.registry.register(
        {"name": "busy", "version": "1.0.0", "displayName": "B"}, actor=ACTOR
    )
    services.registry.transition("busy", Status.INSTALLING, actor=ACTOR)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    theirs = layout.staging / f"{'a' * 32}.{alive.pid}.{host}"
    gone = layout.staging / f"{'b' * 32}.{dead_pid()}.{host}"
    unnamed = layout.staging / ("c" * 32)  # named before staging folders carried an owner
    building = layout.env("busy", "2.0.0")  # no row refers to it yet
    try:
        for folder in (theirs / "module", gone / "module", unnamed / "module", building):
            folder.mkdir(parents=True)
        running_operation(services, "busy", f"{host}:{alive.pid}")

        recover(services.lifecycle)

        assert theirs.exists()
        assert building.exists()
        assert not gone.exists()
        assert not unnamed.exists()
    finally:
        alive.kill()
        alive.wait()

    done = recover(services.lifecycle)

    assert not theirs.exists()
    assert not building.exists()
    assert "busy: install undone, back to REGISTERED" in done


def test_recover_returns_an_interrupted_upgrade_to_its_start(services: Services) -> None:
    registry = services.registry
    registry.register({"name": "demo", "version": "1.0.0", "displayName": "D"}, actor=ACTOR)
    registry.register({"name": "demo", "version": "1.1.0", "displayName": "D"}, actor=ACTOR)
    services.lifecycle.set_status("demo", Status.DISABLED, actor=ACTOR)
    registry.transition("demo", Status.UPDATING, actor=ACTOR)
    op_id = running_operation(
        services, "demo", f"{socket.gethostname()}:{dead_pid()}", fromStatus="DISABLED"
    )

    recover(services.lifecycle)

    module = registry.get("demo")
    assert (module.version, module.status) == ("1.0.0", Status.DISABLED)
    assert module.last_error is not None
    assert "still at 1.0.0" in module.last_error
    assert operation_status(services, op_id) == "failed"
