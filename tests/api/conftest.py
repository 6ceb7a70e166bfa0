"""Helpers of the API tests: manifests, registration, problem assertions, admin headers."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from modhub.auth import credentials
from tests.conftest import bearer

API = "/api/v1"
PROBLEM_TYPE = "application/problem+json"
MASK = "********"

# The seed's full example, with Python handlers (the seed's own .ts handlers only warn).
VMWARE: dict[str, Any] = {
    "name": "vmware-vcenter",
    "version": "1.0.0",
    "displayName": "VMware vCenter Module",
    "description": "Manage VMware vCenter infrastructure",
    "author": "Automation Platform Team",
    "license": "MIT",
    "capabilities": {
        "api": {
            "routes": [
                {
                    "method": "GET",
                    "path": "/vms",
                    "handler": "handlers/list_vms.py",
                    "permissions": ["vmware:read"],
                },
                {
                    "method": "POST",
                    "path": "/vms",
                    "handler": "handlers/create_vm.py",
                    "permissions": ["vmware:write"],
                },
            ]
        },
        "jobs": {
            "handlers": [
                {
                    "name": "sync-inventory",
                    "handler": "jobs/sync_inventory.py",
                    "schedule": "0 */6 * * *",
                    "timeout": 300000,
                    "retries": 3,
                }
            ]
        },
    },
    "dependencies": {"modules": {"core-auth": "^1.0.0"}},
    "config": {
        "schema": {
            "vcenterHost": {"type": "string", "label": "vCenter Host", "required": True},
            "vcenterUsername": {"type": "string", "label": "vCenter Username", "required": True},
            "vcenterPassword": {
                "type": "password",
                "label": "vCenter Password",
                "required": True,
                "sensitive": True,
            },
            "syncInterval": {
                "type": "number",
                "label": "Sync Interval (hours)",
                "default": 6,
                "validation": {"min": 1, "max": 24},
            },
        },
        "defaults": {"syncInterval": 6},
    },
    "permissions": ["vmware:read", "vmware:write", "vmware:delete"],
    "metadata": {"tags": ["vmware"], "category": "infrastructure"},
}

VMWARE_CONFIG = {
    "vcenterHost": "vc.example.com",
    "vcenterUsername": "automation",
    "vcenterPassword": "s3cret-Pa55",
    "syncInterval": 12,
}


def manifest(name: str, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    """Return a small valid manifest; `deps` given as `dependencies={"modules": {...}}`."""
    return {"name": name, "version": version, "displayName": name.title(), **fields}


def vmware(**fields: Any) -> dict[str, Any]:
    """Return a copy of the vmware-vcenter manifest with `fields` replaced."""
    return {**copy.deepcopy(VMWARE), **fields}


def depends(name: str, on: dict[str, str], version: str = "1.0.0") -> dict[str, Any]:
    """Return a manifest of `name` depending on the modules and ranges in `on`."""
    return manifest(name, version, dependencies={"modules": on})


def register(client: TestClient | httpx.Client, token: str, data: dict[str, Any]) -> Any:
    """Register `data` and return the module, failing the test unless it is a 201."""
    response = client.post(f"{API}/modules", json={"manifest": data}, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


def set_status(
    client: TestClient, token: str, name: str, status: str, **params: str
) -> httpx.Response:
    """PUT a module's status and return the response."""
    return client.put(
        f"{API}/modules/{name}/status",
        json={"status": status},
        params=params,
        headers=bearer(token),
    )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem+json response of `status`; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"].startswith("urn:modhub:problem:")
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def error_paths(body: dict[str, Any]) -> list[str]:
    """Return the `path` of every entry of a problem's or a validation's `errors`."""
    for error in body["errors"]:
        assert set(error) == {"path", "code", "message"}, error
        assert error["code"]
        assert error["message"]
    return [error["path"] for error in body["errors"]]


@pytest.fixture
def admin(tokens: dict[str, str]) -> dict[str, str]:
    """Return the Authorization header of the admin user."""
    return bearer(tokens["admin"])


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2 at its lowest cost in these tests.

    At the production cost a hash takes about 0.3 s, and every test here creates and logs
    in three users; the cost parameters themselves are the auth tests' business.
    """
    monkeypatch.setattr(
        credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
