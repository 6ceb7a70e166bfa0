"""Schemathesis against /openapi.json: no request makes the server answer 5xx, and every
response matches the schema the server documents.

SQLite only, on purpose: this tests the HTTP layer (routing, validation, serialisation,
problem documents) against its own contract. The database layer behind it runs on both
SQLite and PostgreSQL in the other API tests, including the inputs that PostgreSQL alone
refuses (NUL characters, over-long strings: see test_problems.py).

The schema is read from the running app, because its OpenAPI document includes the routes
of the modules it serves. That rules out `schema.parametrize()` on a schema loaded at import,
and the lazy `schemathesis.pytest.from_fixture` fails under pytest 9.2 (it reads
`request.node._nodeid`), so the test runs one Hypothesis test per operation itself and
reports every failing operation at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.python.asgi import shutdown_lifespans

from modhub.api.app import create_app
from modhub.services import Services
from tests.api.conftest import API, manifest, register, vmware
from tests.conftest import bearer

CHECKS = [not_a_server_error, response_schema_conformance]
MODULES = ("example-module", "string", "schema", "spare-one", "spare-two")
EXAMPLES = 20  # per operation; the whole file stays well under a minute
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


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (see the module docstring)."""
    return f"sqlite:///{tmp_path / 'modhub.db'}"


@pytest.fixture
def app(services: Services, client: TestClient, tokens: dict[str, str]) -> Iterator[FastAPI]:
    """Yield an app on the test services, with a few modules for requests to find."""
    for name in MODULES:
        register(client, tokens["admin"], manifest(name))
    yield create_app(services=services)
    shutdown_lifespans()  # schemathesis keeps an app's lifespan running until told


# Bodies the schema alone would rarely produce: manifests that register, an empty config.
BODIES: dict[str, st.SearchStrategy[Any]] = {
    "POST /api/v1/modules": st.builds(
        lambda name, minor: {"manifest": manifest(name, f"1.{minor}.0")},
        st.sampled_from(["gen-one", "gen-two", *MODULES]),
        st.integers(0, 3),
    ),
    "POST /api/v1/modules/validate": st.just({"manifest": vmware()}),
    "PUT /api/v1/modules/{name}/config": st.just({"config": {}}),
}


def cases(operation: Any) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid requests; where the path names a module, often a registered one."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    names = st.sampled_from(MODULES) if "{name}" in operation.path else st.none()
    bodies = BODIES.get(operation.label, st.none())

    def known(name: str | None, body: Any) -> st.SearchStrategy[schemathesis.Case]:
        return operation.as_strategy(
            GenerationMode.POSITIVE,
            path_parameters={"name": name} if name else None,
            **({"body": body} if body is not None else {}),
        )

    if operation.label in BODIES or "{name}" in operation.path:
        strategies.append(st.tuples(names, bodies).flatmap(lambda nb: known(*nb)))
    return st.one_of(strategies)


def ensure_modules(client: TestClient, token: str) -> None:
    """Register again the modules an earlier operation deleted."""
    for name in MODULES:
        if client.get(f"{API}/modules/{name}", headers=bearer(token)).status_code == 404:
            register(client, token, manifest(name))


def test_api_conforms_to_its_schema(
    app: FastAPI, client: TestClient, tokens: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    headers = bearer(tokens["admin"])
    failures: dict[str, str] = {}

    for operation in operations:
        ensure_modules(client, tokens["admin"])

        @SETTINGS
        @given(case=cases(operation))
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # one report for every failing operation
            failures[operation.label] = str(exc)

    labels = {operation.label for operation in operations}
    assert {"POST /api/v1/modules", "PUT /api/v1/modules/{name}/config"} <= labels
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
