"""The permission matrix covers every operation: each one the OpenAPI document lists is in
tests/api/test_auth_matrix.py or here (a new endpoint fails this test until it is added),
and a module's own routes (`/api/v1/m/*`) answer every method by every kind of caller
with 401, 403 or the handler. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.registry import Status
from modhub.services import Services
from tests.api.conftest import API, assert_problem, manifest, register
from tests.api.test_auth_matrix import (
    ADMIN,
    ANY_USER,
    CALLERS,
    ENDPOINTS,
    READ,
    WRITE,
    credentials,
    expected,
    outcome,
)
from tests.conftest import bearer

UPLOAD = "an upload"  # the body of POST /modules/bundles: a (bad) bundle file
# The operations test_auth_matrix.py leaves out, with the permission README's API table
# gives each. (method, path, body, permission)
MORE: list[tuple[str, str, Any, str | None]] = [
    ("GET", f"{API}/auth/me", None, ANY_USER),
    ("GET", f"{API}/ui/navigation", None, ANY_USER),
    ("GET", f"{API}/modules/target/jobs", None, READ),
    ("GET", f"{API}/jobs/runs", None, READ),
    ("GET", f"{API}/jobs/runs/999", None, READ),
    ("GET", f"{API}/modules/target/verify", None, READ),
    ("GET", f"{API}/modules/target/logs", None, READ),
    ("GET", f"{API}/operations/no-such-op", None, READ),
    ("POST", f"{API}/modules/target/jobs/j/run", None, WRITE),
    ("POST", f"{API}/jobs/runs/999/cancel", None, WRITE),
    ("GET", f"{API}/events", None, READ),
    ("GET", f"{API}/events/999", None, READ),
    ("POST", f"{API}/events/999/redeliver?subscriber=target", None, WRITE),
    ("POST", f"{API}/modules/bundles", UPLOAD, ADMIN),
    ("POST", f"{API}/modules/target/upgrade", {"version": "1.0.0"}, ADMIN),
    ("POST", f"{API}/modules/target/rollback", None, ADMIN),
]
NOT_OPERATIONS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PATH_PARAMS = {"{key}"}  # a store key may hold slashes ({key:path} in the route)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def template(path: str) -> re.Pattern[str]:
    """Return a pattern matching the concrete paths of an OpenAPI path template."""
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile(
        "".join(
            (".+" if p in PATH_PARAMS else "[^/]+") if p.startswith("{") else re.escape(p)
            for p in parts
        )
        + "$"
    )


def test_every_operation_is_in_a_matrix(client: TestClient, tokens: dict[str, str]) -> None:
    spec = client.get("/openapi.json", headers=bearer(tokens["admin"])).json()
    covered = [(m, p) for m, p, _, _ in [*ENDPOINTS, *MORE]]
    missing = [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        if path not in NOT_OPERATIONS and not path.startswith(f"{API}/m/")
        for method in operations
        if method.upper() in METHODS
        and not any(
            m == method.upper()
            and template(path).match(p.replace("{victim}", "1").partition("?")[0])
            for m, p in covered
        )
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    MORE,
    ids=[f"{m} {p.removeprefix(API)}" for m, p, _, _ in MORE],
)
def test_matrix_of_the_other_operations(
    client: TestClient,
    services: Services,
    tokens: dict[str, str],
    method: str,
    path: str,
    body: Any,
    permission: str | None,
) -> None:
    register(client, tokens["admin"], manifest("target"))
    headers = credentials(services, tokens)

    actual = {}
    for caller in CALLERS:
        if body == UPLOAD:
            files = {"file": ("bad.zip", b"not a zip", "application/zip")}
            response = client.request(method, path, files=files, headers=headers[caller])
        else:
            response = client.request(method, path, json=body, headers=headers[caller])
        assert response.status_code < 500, (caller, response.text)
        actual[caller] = outcome(response.status_code)
        if response.status_code == 403:
            assert assert_problem(response, 403)["permission"] == permission

    assert actual == {caller: expected(caller, permission) for caller in CALLERS}


# -- a module's own routes --------------------------------------------------------------

HANDLER = "def handler(request):\n    return {'method': request.method}\n"


@pytest.fixture
def guarded_module(services: Services, tmp_path: Path) -> str:
    """Enable `mx`: /thing answers every method; reading needs mx:read, writing mx:write;
    /open needs no permission. The operator role holds mx:read."""
    folder = tmp_path / "mx"
    (folder / "handlers").mkdir(parents=True)
    reads, writes = ("GET", "OPTIONS"), ("POST", "PUT", "PATCH", "DELETE")
    routes = [
        {"method": m, "path": "/thing", "handler": "handlers/h.py", "permissions": ["mx:read"]}
        for m in reads
    ] + [
        {"method": m, "path": "/thing", "handler": "handlers/h.py", "permissions": ["mx:write"]}
        for m in writes
    ]
    routes.append({"method": "GET", "path": "/open", "handler": "handlers/h.py"})
    data = {
        "name": "mx",
        "version": "1.0.0",
        "displayName": "Guarded",
        "permissions": ["mx:read", "mx:write"],
        "capabilities": {"api": {"routes": routes}},
    }
    (folder / "module.json").write_text(json.dumps(data))
    (folder / "handlers" / "h.py").write_text(HANDLER)
    services.lifecycle.add_bundle(folder, actor="test")
    services.lifecycle.set_status("mx", Status.ENABLED, actor="test")
    services.auth.grant("operator", "mx:read")
    return f"{API}/m/mx"


def module_expected(caller: str, permission: str | None) -> str:
    """Return 'served', '401' or '403' for a module route needing `permission`."""
    if caller in {"none", "expired", "alg-none", "wrong-key", "tampered"} | {
        "unknown-user",
        "garbage",
        "bogus-api-token",
    }:
        return "401"  # a module route always needs a caller, even with no permission
    role = caller.removeprefix("api-")
    held = {"admin": {"mx:read", "mx:write"}, "operator": {"mx:read"}, "viewer": set()}[role]
    return "served" if permission is None or permission in held else "403"


def test_module_routes_matrix_every_method_every_caller(
    client: TestClient, services: Services, tokens: dict[str, str], guarded_module: str
) -> None:
    headers = credentials(services, tokens)
    needs = {"GET": "mx:read", "HEAD": "mx:read", "OPTIONS": "mx:read"}
    actual, wanted = {}, {}
    for method in METHODS:
        permission = needs.get(method, "mx:write")
        for caller in CALLERS:
            response = client.request(method, f"{guarded_module}/thing", headers=headers[caller])
            assert response.status_code < 500, (method, caller, response.text)
            actual[method, caller] = outcome(response.status_code)
            wanted[method, caller] = module_expected(caller, permission)
            if response.status_code == 403 and method != "HEAD":
                assert assert_problem(response, 403)["permission"] == permission
            if response.status_code == 200 and method != "HEAD":
                assert response.json() == {"method": method}
    for caller in CALLERS:
        response = client.get(f"{guarded_module}/open", headers=headers[caller])
        actual["GET /open", caller] = outcome(response.status_code)
        wanted["GET /open", caller] = module_expected(caller, None)

    assert actual == wanted


def test_a_method_an_operation_lacks_is_never_served(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    """Each documented path, by each method it does not document (HEAD aside: the module
    routes' matrix covers it), by a caller with no token, a viewer and an admin: refused
    (405; 401, 403 or 404 where the path is another operation's too), never served."""
    register(client, tokens["admin"], manifest("target"))
    spec = client.get("/openapi.json", headers=bearer(tokens["admin"])).json()
    headers = credentials(services, tokens)
    served = {}
    for path, operations in spec["paths"].items():
        if path in NOT_OPERATIONS or path.startswith(f"{API}/m/"):
            continue
        documented = {m.upper() for m in operations}
        concrete = next(
            p.replace("{victim}", "1")
            for _, p, _, _ in [*ENDPOINTS, *MORE]
            if template(path).match(p.replace("{victim}", "1").partition("?")[0])
        )
        for method in sorted(set(METHODS) - documented - {"HEAD"}):
            for caller in ("none", "viewer", "admin"):
                status = client.request(method, concrete, headers=headers[caller]).status_code
                if status not in (401, 403, 404, 405):  # 403: another operation's path
                    served[method, concrete, caller] = status
    assert served == {}
