"""Schemathesis with enabled modules and callers of every role: no request makes the
server answer 5xx, and every response (403s included) matches the documented schema.

test_schemathesis.py calls every operation as an admin on registered modules only; here
two modules are enabled, so their routes (`/api/v1/m/...`) are in the OpenAPI document
and answered by real workers, and each example is sent by a viewer, an operator, an
admin or one of their API tokens, 30 examples per operation. SQLite only, for the reason
test_schemathesis.py gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis

# `from_asgi` imports this on first use. Imported here, at collection, pytest's assertion
# rewriting parses it before any server thread runs: CPython 3.11's ast.parse is not
# reentrant (gh-106905), and a traceback formatted in a garbage collection during that parse
# raised "AST constructor recursion depth mismatch" once on CI.
import schemathesis.specs.openapi.schemas
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.python.asgi import shutdown_lifespans

from modhub.api.app import create_app
from modhub.registry import Status
from modhub.services import Services
from tests.api.conftest import API, manifest, register
from tests.api.test_schemathesis import CHECKS, MODULES, cases, ensure_modules
from tests.conftest import ROLES, bearer

EXAMPLES = 30
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
HANDLER = (
    "def handler(request):\n"
    "    return {'path': request.path, 'id': request.path_params.get('id')}\n"
)
ENABLED = ("fz-open", "fz-guarded")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (see test_schemathesis.py)."""
    return f"sqlite:///{tmp_path / 'modhub.db'}"


def enable(services: Services, folder: Path, name: str, permission: str | None) -> None:
    """Install and enable a module whose routes answer every method, needing `permission`."""
    (folder / "handlers").mkdir(parents=True)
    needs = {"permissions": [permission]} if permission else {}
    routes = [
        {"method": method, "path": path, "handler": "handlers/h.py", **needs}
        for method in ("GET", "POST", "PUT", "DELETE")
        for path in ("/items", "/items/:id")
    ]
    data = {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "permissions": [permission] if permission else [],
        "capabilities": {"api": {"routes": routes}},
    }
    (folder / "module.json").write_text(json.dumps(data))
    (folder / "handlers" / "h.py").write_text(HANDLER)
    services.lifecycle.add_bundle(folder, actor="test")
    services.lifecycle.set_status(name, Status.ENABLED, actor="test")


@pytest.fixture
def app(
    services: Services, client: TestClient, tokens: dict[str, str], tmp_path: Path
) -> Iterator[FastAPI]:
    """Yield an app with registered modules and two enabled ones."""
    for name in MODULES:
        register(client, tokens["admin"], manifest(name))
    enable(services, tmp_path / "open", ENABLED[0], None)
    enable(services, tmp_path / "guarded", ENABLED[1], "fz-guarded:use")
    services.auth.grant("operator", "fz-guarded:use")
    yield create_app(services=services)
    shutdown_lifespans()


def test_api_conforms_to_its_schema_for_every_role(
    app: FastAPI, client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    callers = {role: bearer(tokens[role]) for role in ROLES}
    for role in ROLES:
        callers[f"api-{role}"] = bearer(services.auth.create_api_token(role, f"{role}-fuzz"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: dict[str, str] = {}
    seen: dict[str, set[int]] = {}
    module_answers: set[int] = set()  # statuses of the enabled modules' own routes

    for operation in operations:
        ensure_modules(client, tokens["admin"])

        @SETTINGS
        @given(case=cases(operation), caller=st.sampled_from(sorted(callers)))
        def check(case: schemathesis.Case, caller: str) -> None:
            response = case.call(headers=callers[caller])
            seen.setdefault(caller, set()).add(response.status_code)
            if f"{API}/m/" in case.path:
                module_answers.add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # one report for every failing operation
            failures[operation.label] = str(exc)

    labels = {operation.label for operation in operations}
    for name in ENABLED:
        assert any(label.startswith(f"GET {API}/m/{name}/") for label in labels), labels
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert 403 in seen["viewer"]  # non-admin callers were refused somewhere, and served
    assert 200 in seen["viewer"]
    assert {200, 403} <= module_answers  # the handlers ran, and refused the viewer
