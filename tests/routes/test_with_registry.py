"""Module routes on the real app: real tokens, the registry's status and config."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.api.app import create_app
from modhub.errors import NotFound
from modhub.manifest import Manifest
from modhub.registry import Status
from modhub.routes import (
    ModuleConfigs,
    RouteTableHolder,
    load_table,
    refresh_module,
)
from modhub.sandbox import ModuleRuntime
from modhub.services import Services
from tests.api.conftest import VMWARE_CONFIG, register, set_status, vmware
from tests.conftest import bearer
from tests.routes.conftest import FakePool, make_runtime

M = "/api/v1/m"


@dataclass
class Wired:
    """The real auth and configs with a fake pool: what the lead wires into Services."""

    auth: Any
    routes: RouteTableHolder
    pool: FakePool
    module_configs: ModuleConfigs


@dataclass
class Platform:
    services: Services
    wired: Wired
    client: TestClient
    tokens: dict[str, str]
    runtimes: Path

    def runtime_for(self, manifest: Manifest, code: Path | None) -> ModuleRuntime | None:
        # Registered from a manifest, modules here have no code; those named "coded-*"
        # get a folder with their handler files, as an installed bundle would.
        if code is None and not manifest.name.startswith("coded-"):
            return None
        return make_runtime(self.runtimes, manifest)

    def refresh(self, name: str) -> None:
        refresh_module(self.wired.routes, self.services.registry, name, self.runtime_for)

    def get(self, path: str, role: str = "admin") -> Any:
        return self.client.get(f"{M}{path}", headers=bearer(self.tokens[role]))


@pytest.fixture
def platform(services: Services, tokens: dict[str, str], tmp_path: Path) -> Iterator[Platform]:
    wired = Wired(services.auth, RouteTableHolder(), FakePool(), ModuleConfigs(services.registry))
    # The app's own dispatcher serves the wired table and the fake pool; the test refreshes
    # the table itself with a runtime_for that gives "coded-*" modules code.
    services.routes = wired.routes
    services.pool = wired.pool  # type: ignore[assignment]
    services.module_configs = wired.module_configs
    app = create_app(services=services)
    with TestClient(app) as client:
        yield Platform(services, wired, client, tokens, tmp_path / "runtimes")


def coded(name: str) -> dict[str, Any]:
    """Return the vmware manifest as module `name`, its permissions in the module's family
    (`coded:read`): a module declares permissions only in its own namespace."""
    data = vmware(name=name, dependencies={})
    data["permissions"] = [p.replace("vmware:", "coded:") for p in data["permissions"]]
    for route in data["capabilities"]["api"]["routes"]:
        route["permissions"] = [p.replace("vmware:", "coded:") for p in route["permissions"]]
    return data


def coded_vmware() -> dict[str, Any]:
    data = coded("coded-vmware")
    data["capabilities"]["api"]["routes"].append(
        {"method": "GET", "path": "/vms/:id", "handler": "handlers/get_vm.py:get"}
    )
    return data


def enable(platform: Platform, data: dict[str, Any], config: dict[str, Any] | None) -> None:
    admin = platform.tokens["admin"]
    register(platform.client, admin, data)
    if config is not None:
        response = platform.client.put(
            f"/api/v1/modules/{data['name']}/config",
            json={"config": config},
            headers=bearer(admin),
        )
        assert response.status_code == 200, response.text
    assert set_status(platform.client, admin, data["name"], "ENABLED").status_code == 200
    platform.refresh(data["name"])


def test_enabled_module_gets_real_user_and_clear_config(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    response = platform.get("/coded-vmware/vms/vm-1")
    assert response.status_code == 200, response.text
    call = platform.wired.pool.calls[-1]
    assert call.handler == "handlers/get_vm.py:get"
    assert call.payload["pathParams"] == {"id": "vm-1"}
    assert call.payload["user"] == {"username": "admin", "role": "admin", "permissions": ["*"]}
    assert call.config["vcenterPassword"] == "s3cret-Pa55"  # in clear for the module only
    assert call.config["syncInterval"] == 12


def test_real_tokens_and_role_permissions(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    assert platform.client.get(f"{M}/coded-vmware/vms").status_code == 401
    forbidden = platform.get("/coded-vmware/vms", "viewer")
    assert forbidden.status_code == 403
    assert forbidden.json()["permission"] == "coded:read"
    platform.services.auth.grant("viewer", "coded:read")
    assert platform.get("/coded-vmware/vms", "viewer").status_code == 200
    assert platform.get("/coded-vmware/vms/1", "viewer").status_code == 200  # no permission


def test_config_change_is_seen_by_the_next_request(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    platform.get("/coded-vmware/vms")
    response = platform.client.put(
        "/api/v1/modules/coded-vmware/config",
        json={"config": {**VMWARE_CONFIG, "vcenterPassword": "n3w-Pa55", "syncInterval": 3}},
        headers=bearer(platform.tokens["admin"]),
    )
    assert response.status_code == 200, response.text
    platform.get("/coded-vmware/vms")
    first, second = (c.config for c in platform.wired.pool.calls)
    assert (first["vcenterPassword"], first["syncInterval"]) == ("s3cret-Pa55", 12)
    assert (second["vcenterPassword"], second["syncInterval"]) == ("n3w-Pa55", 3)


def test_disable_and_enable_switch_routes_at_once(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    admin = platform.tokens["admin"]
    assert platform.get("/coded-vmware/vms").status_code == 200
    assert set_status(platform.client, admin, "coded-vmware", "DISABLED").status_code == 200
    platform.refresh("coded-vmware")
    assert platform.get("/coded-vmware/vms").status_code == 404
    assert set_status(platform.client, admin, "coded-vmware", "ENABLED").status_code == 200
    platform.refresh("coded-vmware")
    assert platform.get("/coded-vmware/vms").status_code == 200


def test_removed_module_is_404(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    response = platform.client.delete(
        "/api/v1/modules/coded-vmware", headers=bearer(platform.tokens["admin"])
    )
    assert response.status_code == 204, response.text
    platform.refresh("coded-vmware")
    assert platform.get("/coded-vmware/vms").status_code == 404
    assert "coded-vmware" not in platform.wired.routes.table


def test_seed_module_without_code_answers_501(platform: Platform) -> None:
    seed = {
        "name": "example-module",
        "version": "1.0.0",
        "displayName": "Example Module",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/hello", "handler": "handlers/hello.ts"}]}
        },
    }
    enable(platform, seed, None)
    response = platform.get("/example-module/hello")
    assert response.status_code == 501
    assert "handlers/hello.ts" in response.json()["detail"]
    assert platform.wired.pool.calls == []


def test_load_table_holds_only_enabled_modules(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    register(platform.client, platform.tokens["admin"], coded("coded-idle"))
    table = load_table(platform.services.registry, platform.runtime_for)
    assert list(table) == ["coded-vmware"]
    assert table["coded-vmware"].runtime is not None


def test_openapi_of_the_real_app(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    doc = platform.client.get("/openapi.json").json()
    assert doc["paths"]["/api/v1/m/coded-vmware/vms"]["get"]["tags"] == ["module:coded-vmware"]
    assert "/api/v1/modules" in doc["paths"]  # the platform's own routes are still there
    assert set_status(platform.client, platform.tokens["admin"], "coded-vmware", "DISABLED")
    platform.refresh("coded-vmware")
    doc = platform.client.get("/openapi.json").json()
    assert not any(path.startswith("/api/v1/m/") for path in doc["paths"])


def test_module_configs_decrypt_only_when_the_config_changes(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    configs = ModuleConfigs(platform.services.registry)
    opened: list[str] = []
    real_open = platform.services.registry.box.open

    def counting_open(value: str) -> str:
        opened.append(value)
        return real_open(value)

    monkeypatch.setattr(platform.services.registry.box, "open", counting_open)
    for _ in range(3):
        assert configs.config_for_code("coded-vmware")["vcenterPassword"] == "s3cret-Pa55"
    assert len(opened) == 1
    platform.services.registry.set_config(
        "coded-vmware", {**VMWARE_CONFIG, "vcenterPassword": "other"}, actor="test"
    )
    assert configs.config_for_code("coded-vmware")["vcenterPassword"] == "other"
    assert len(opened) == 2
    with pytest.raises(NotFound):
        configs.config_for_code("no-such-module")


def test_upgrade_keeps_serving_until_it_switches_versions(platform: Platform) -> None:
    enable(platform, coded_vmware(), VMWARE_CONFIG)
    admin = platform.tokens["admin"]
    v2 = coded_vmware()
    v2["version"] = "2.0.0"
    v2["capabilities"]["api"]["routes"].append(
        {"method": "GET", "path": "/health", "handler": "handlers/health.py"}
    )
    register(platform.client, admin, v2)
    registry = platform.services.registry
    # While the module is UPDATING, the old version keeps answering.
    registry.transition("coded-vmware", Status.UPDATING, actor="test")
    platform.refresh("coded-vmware")
    assert platform.get("/coded-vmware/vms").status_code == 200
    assert platform.wired.pool.calls[-1].runtime.version == "1.0.0"
    registry.transition("coded-vmware", Status.ENABLED, actor="test")
    response = platform.client.post(
        "/api/v1/modules/coded-vmware/upgrade", json={"version": "2.0.0"}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    platform.refresh("coded-vmware")
    assert platform.get("/coded-vmware/health").status_code == 200
    assert platform.wired.pool.calls[-1].runtime.version == "2.0.0"


def test_a_full_reload_keeps_an_updating_module_as_it_was_served(platform: Platform) -> None:
    """The poller's reload (another process changed the registry) rebuilds the whole table:
    a module UPDATING keeps the routes it had, and one that was not served stays unserved."""
    registry = platform.services.registry
    for name in ("coded-served", "coded-idle"):
        registry.register(
            {
                "name": name,
                "version": "1.0.0",
                "displayName": name,
                "capabilities": {
                    "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "h.py"}]}
                },
            },
            actor="test",
        )
        registry.transition(name, Status.INSTALLING, actor="test")
        registry.transition(name, Status.DISABLED, actor="test")
    registry.set_status("coded-served", Status.ENABLED, actor="test")
    served = load_table(registry, platform.runtime_for)
    for name in ("coded-served", "coded-idle"):
        registry.transition(name, Status.UPDATING, actor="test")

    table = load_table(registry, platform.runtime_for, served)

    assert list(table) == ["coded-served"]
    assert table["coded-served"] is served["coded-served"]  # the old version, its worker kept
    assert list(load_table(registry, platform.runtime_for)) == []  # a start-up knows none
