"""TypeScript modules end to end on a real `modhub serve` (SQLite; the store and calls have
their own two-database tests): the vmware-vcenter-ts example installed from a bundle, its
routes, sync job, store and call to core-auth answered by a Node worker under the real
sandbox, and its React page bundled for the console (npm ci of react from the registry:
this test needs the network); and a module written by `modhub module new` answering at
once."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from typer.testing import CliRunner

from modhub.cli import app
from tests.conftest import start_server, stop_server
from tests.e2e.test_module_services import EXAMPLES, M, install
from tests.lifecycle.conftest import wait_for
from tests.lifecycle.test_recovery import Node
from tests.typescript.conftest import requires_node
from tests.web.test_console import log_in

pytestmark = requires_node
M_TS = "vmware-vcenter-ts"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    server = start_server(tmp_path_factory.mktemp("ts-serve") / "data")
    try:
        yield Node(server)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def vmware(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Node:
    """Install core-auth and vmware-vcenter-ts (configured, ENABLED) on the server, once."""
    folder = tmp_path_factory.mktemp("examples")
    for name in ("core-auth", M_TS):  # copied: an upload packs beside the folder
        shutil.copytree(EXAMPLES / name, folder / name)
    install(node, folder / "core-auth")
    node.upload(folder / M_TS)
    config = {"vcenterHost": "vc.example", "vcenterUsername": "ops", "vcenterPassword": "pw"}
    assert node.http.put(f"/modules/{M_TS}/config", json={"config": config}).is_success
    response = node.http.put(f"/modules/{M_TS}/status", json={"status": "ENABLED"})
    if response.status_code == 202:
        node.finish(response)
    assert node.module(M_TS)["status"] == "ENABLED"
    return node


def test_the_typescript_vmware_example_works_like_the_python_one(vmware: Node) -> None:
    node = vmware

    before = node.http.get(f"{M}/vmware-vcenter-ts/vms")
    assert before.status_code == 200, before.text
    assert before.json()["items"] == []
    assert before.json()["host"] == "vc.example"
    assert "sync-inventory" in before.json()["hint"]

    run = node.http.post("/modules/vmware-vcenter-ts/jobs/sync-inventory/run").json()
    wait_for(
        lambda: node.http.get(f"/jobs/runs/{run['id']}").json()["status"] == "succeeded",
        what="the sync",
    )
    assert node.http.get(f"/jobs/runs/{run['id']}").json()["result"] == {"vms": 3, "poweredOn": 2}
    synced = node.http.get(f"{M}/vmware-vcenter-ts/vms").json()
    assert [vm["name"] for vm in synced["items"]] == ["web-01", "web-02", "db-01"]
    assert "hint" not in synced
    on = node.http.get(f"{M}/vmware-vcenter-ts/vms", params={"powerState": "poweredOn"}).json()
    assert on["total"] == 2

    created = node.http.post(f"{M}/vmware-vcenter-ts/vms", json={"name": "app-01", "cpus": 4})
    assert created.status_code == 201, created.text
    assert created.json()["createdBy"] == "admin"  # asked of core-auth, as the caller
    assert created.json()["cpus"] == 4
    events = node.http.get("/events", params={"source": M_TS, "name": "vm.created"}).json()
    assert [e["payload"] for e in events["items"]] == [
        {
            "id": created.json()["id"],
            "name": "app-01",
            "cpus": 4,
            "memoryMb": 1024,
            "createdBy": "admin",
        }
    ]
    refused = node.http.post(f"{M}/vmware-vcenter-ts/vms", json={})
    assert (refused.status_code, refused.json()) == (422, {"error": "name is required"})
    names = [vm["name"] for vm in node.http.get(f"{M}/vmware-vcenter-ts/vms").json()["items"]]
    assert sorted(names) == ["app-01", "db-01", "web-01", "web-02"]

    # The .tsx page: a React component bundled at install with the module's own react and
    # react-dom (npm ci of its package-lock.json), served as one ES module with mount/unmount.
    [entry] = [e for e in node.http.get("/ui/navigation").json() if e["module"] == M_TS]
    assert entry["componentUrl"] == f"/ui/modules/{M_TS}/pages/VMwareDashboard.tsx"
    bundle = httpx.get(node.server.url + entry["componentUrl"])
    assert bundle.status_code == 200, bundle.text[:300]
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert re.search(r"export\s*\{\w+ as mount,\s*\w+ as unmount\}", bundle.text)
    assert "createRoot" in bundle.text or "_internalRoot" in bundle.text  # react-dom, bundled
    assert "import " not in bundle.text[:200]  # nothing left to fetch (no CDN)


def test_the_console_mounts_the_react_page(vmware: Node, page: Page) -> None:
    run = vmware.http.post(f"/modules/{M_TS}/jobs/sync-inventory/run").json()
    wait_for(
        lambda: vmware.http.get(f"/jobs/runs/{run['id']}").json()["status"] == "succeeded",
        what="the sync",
    )
    log_in(page, vmware.server, "/m/vmware-vcenter-ts/vmware-ts")
    frame = page.frame_locator("iframe.module-frame")
    # The React component fetched the module's route through the console's bridge.
    expect(frame.get_by_role("table")).to_be_visible()
    expect(frame.get_by_role("cell", name="web-01")).to_be_visible()
    expect(frame.get_by_role("cell", name="poweredOff").first).to_be_visible()


@pytest.mark.parametrize("lang", ["typescript", "python"])
def test_a_new_module_answers_its_route_at_once(node: Node, tmp_path: Path, lang: str) -> None:
    name = f"greeter-{lang[:2]}"
    folder = tmp_path / name
    outcome = CliRunner().invoke(app, ["module", "new", name, "--lang", lang, "--dir", str(folder)])
    assert outcome.exit_code == 0, outcome.output
    assert CliRunner().invoke(app, ["validate", str(folder)]).exit_code == 0
    install(node, folder)
    first = node.http.get(f"{M}/{name}/hello")
    assert first.status_code == 200, first.text
    assert first.json() == {"message": "Hello, admin!", "count": 1}
    assert node.http.get(f"{M}/{name}/hello").json()["count"] == 2
    navigation = node.http.get("/ui/navigation").json()
    assert [entry["componentUrl"] for entry in navigation if entry["module"] == name] == [
        f"/ui/modules/{name}/ui/pages/Main.js"
    ]
