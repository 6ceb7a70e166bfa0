"""Every error is an RFC 9457 problem: application/problem+json with type, title, status,
detail, and `errors` naming the field path where there are several."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modhub.services import Services
from tests.api.conftest import API, assert_problem, error_paths, manifest, register
from tests.conftest import PASSWORD, LiveServer, bearer

MIB = 1024 * 1024
# For tests of the HTTP layer alone (routing, body limits, parsing, headers): the database
# they run on changes nothing, so they run on SQLite only. Everything that reaches the
# database runs on both.
HTTP_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def padded_body(size: int) -> bytes:
    """Return a request body with a valid manifest of exactly `size` bytes."""
    head = json.dumps({"manifest": {**manifest("padded"), "description": ""}})[:-3].encode()
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield `body` in pieces, so httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


# -- 404, 405, 409 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/modules/nobody", None),
        ("PUT", "/modules/nobody/status", {"status": "ENABLED"}),
        ("PUT", "/modules/nobody/config", {"config": {}}),
        ("DELETE", "/modules/nobody", None),
    ],
)
def test_unknown_module_is_404(
    client: TestClient, admin: dict[str, str], method: str, path: str, body: Any
) -> None:
    response = client.request(method, API + path, json=body, headers=admin)

    problem = assert_problem(response, 404)
    assert problem["type"] == "urn:modhub:problem:not-found"
    assert "nobody" in problem["detail"]


@HTTP_ONLY
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v2/modules"),
        ("GET", "/api/v1/modules/some-module/no/such/thing"),
        ("GET", "/api"),
        ("POST", "/api/v1/nope"),
        ("DELETE", "/api/v2/modules"),
    ],
)
def test_unknown_path_is_404(
    client: TestClient, admin: dict[str, str], method: str, path: str
) -> None:
    assert_problem(client.request(method, path, headers=admin), 404)
    assert_problem(client.request(method, path), 404)


@HTTP_ONLY
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/modules", "GET"),
        ("DELETE", "/modules", "GET"),
        ("PUT", "/auth/login", "POST"),
        ("POST", "/modules/example", "GET"),
        ("POST", "/schemas/manifest", "GET"),
        ("PATCH", "/modules/example/status", "PUT"),
        ("GET", "/auth/login", "POST"),
        ("GET", "/modules/validate/status", "PUT"),
    ],
)
def test_wrong_method_is_405(
    client: TestClient, admin: dict[str, str], method: str, path: str, allowed: str
) -> None:
    response = client.request(method, API + path, headers=admin)

    problem = assert_problem(response, 405)
    assert problem["type"] == "urn:modhub:problem:method-not-allowed"
    assert allowed in response.headers["allow"]


def test_conflict_is_409(client: TestClient, tokens: dict[str, str], admin: dict[str, str]) -> None:
    register(client, tokens["admin"], manifest("twice"))

    response = client.post(f"{API}/modules", json={"manifest": manifest("twice")}, headers=admin)

    problem = assert_problem(response, 409)
    assert problem["type"] == "urn:modhub:problem:conflict"


# -- 413 -----------------------------------------------------------------------------------


@HTTP_ONLY
def test_body_at_the_limit_is_accepted(client: TestClient, admin: dict[str, str]) -> None:
    body = padded_body(MIB)
    assert len(body) == MIB

    response = client.post(
        f"{API}/modules/validate",
        content=body,
        headers={**admin, "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text[:300]
    assert response.json()["valid"] is True


@HTTP_ONLY
def test_body_over_the_limit_with_content_length_is_413(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        f"{API}/modules",
        content=padded_body(MIB + 1),
        headers={**admin, "Content-Type": "application/json"},
    )

    problem = assert_problem(response, 413)
    assert problem["type"] == "urn:modhub:problem:payload-too-large"
    assert client.get(f"{API}/modules", headers=admin).json()["total"] == 0


@HTTP_ONLY
def test_streamed_body_over_the_limit_is_413(client: TestClient, admin: dict[str, str]) -> None:
    request = client.build_request(
        "POST",
        f"{API}/modules",
        content=chunks(padded_body(MIB + 1)),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"

    response = client.send(request)

    assert_problem(response, 413)
    assert client.get(f"{API}/modules", headers=admin).json()["total"] == 0


@HTTP_ONLY
def test_streamed_body_under_the_limit_is_served(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/modules/validate",
        content=chunks(padded_body(MIB), size=1000),
        headers={**admin, "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text[:300]


@HTTP_ONLY
def test_oversized_bodies_are_refused_by_a_real_server(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        token = http.post(
            f"{API}/auth/login", json={"username": "admin", "password": PASSWORD}
        ).json()["accessToken"]
        headers = {**bearer(token), "Content-Type": "application/json"}

        declared = http.post(f"{API}/modules", content=padded_body(2 * MIB), headers=headers)
        streamed = http.post(
            f"{API}/modules", content=chunks(padded_body(2 * MIB)), headers=headers
        )
        fine = http.post(
            f"{API}/modules/validate", content=chunks(padded_body(MIB)), headers=headers
        )
        total = http.get(f"{API}/modules", headers=headers).json()["total"]

    assert_problem(declared, 413)
    assert_problem(streamed, 413)
    assert fine.status_code == 200, fine.text[:300]
    assert total == 0


# -- 422 -----------------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize(
    "content",
    [b"{bad json", b'{"manifest": {"name": "x",}}', b"", b'{"manifest": ', b"\xff\xfe"],
)
def test_malformed_json_is_422(client: TestClient, admin: dict[str, str], content: bytes) -> None:
    response = client.post(
        f"{API}/modules",
        content=content,
        headers={**admin, "Content-Type": "application/json"},
    )

    problem = assert_problem(response, 422)
    assert problem["type"] == "urn:modhub:problem:invalid-input"
    assert len(problem["errors"]) == 1
    assert error_paths(problem)[0] in ("", "/manifest")


@HTTP_ONLY
def test_malformed_json_names_where_it_breaks(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/modules",
        content=b'{"manifest": {"name": "x",}}',
        headers={**admin, "Content-Type": "application/json"},
    )

    [error] = assert_problem(response, 422)["errors"]
    assert error == {
        "path": "",
        "code": "json_invalid",
        "message": error["message"],
    }
    assert "character 26" in error["message"]


@HTTP_ONLY
@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        ("POST", "/modules", {"manifest": "module.json"}, "/manifest"),
        ("POST", "/modules", {"manifest": [1, 2]}, "/manifest"),
        ("POST", "/modules", {}, "/manifest"),
        ("POST", "/modules", [], ""),
        ("POST", "/modules/validate", {"manifest": 5}, "/manifest"),
        ("PUT", "/modules/x/status", {"status": ["ENABLED"]}, "/status"),
        ("PUT", "/modules/x/config", {"config": "a=b"}, "/config"),
        ("POST", "/auth/login", {"username": 1, "password": "x"}, "/username"),
        ("POST", "/auth/login", {"username": "admin"}, "/password"),
        ("POST", "/users", {"username": "u", "password": "p" * 10, "role": 3}, "/role"),
    ],
)
def test_wrong_field_types_are_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    method: str,
    path: str,
    body: Any,
    where: str,
) -> None:
    response = client.request(method, API + path, json=body, headers=admin)

    assert error_paths(assert_problem(response, 422)) == [where]


@HTTP_ONLY
def test_every_invalid_field_is_listed(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/users", json={"username": 5, "password": None, "role": []}, headers=admin
    )

    assert sorted(error_paths(assert_problem(response, 422))) == ["/password", "/role", "/username"]


@pytest.mark.parametrize(
    "text",
    [
        '{"manifest": {"name": "nan-mod", "version": "1.0.0", "displayName": "N",'
        ' "metadata": {"n": NaN}}}',
        '{"manifest": {"name": "inf-mod", "version": "1.0.0", "displayName": "I",'
        ' "metadata": {"n": 1e999}}}',
        '{"manifest": {"name": "sur-mod", "version": "1.0.0", "displayName": "S",'
        ' "metadata": {"s": "\\ud800"}}}',
        '{"manifest": {"name": "nul-mod", "version": "1.0.0", "displayName": "a\\u0000b"}}',
        '{"manifest": {"name": "deep-mod", "version": "1.0.0", "displayName": "D",'
        ' "metadata": {"d": ' + "[" * 100 + "]" * 100 + "}}}",
    ],
    ids=["nan", "infinity", "lone-surrogate", "nul", "deep"],
)
def test_values_that_cannot_be_stored_and_served_are_422(
    client: TestClient, admin: dict[str, str], text: str
) -> None:
    response = client.post(
        f"{API}/modules",
        content=text.encode(),
        headers={**admin, "Content-Type": "application/json"},
    )

    assert error_paths(assert_problem(response, 422)) == ["/manifest"]
    assert client.get(f"{API}/modules", headers=admin).json()["total"] == 0


def test_config_values_that_cannot_be_served_are_422(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    schema = {"s": {"type": "string"}, "n": {"type": "number"}}
    register(client, tokens["admin"], manifest("conf", config={"schema": schema}))

    for text in ('{"config": {"n": NaN}}', '{"config": {"s": "\\udfff"}}'):
        response = client.put(
            f"{API}/modules/conf/config",
            content=text.encode(),
            headers={**admin, "Content-Type": "application/json"},
        )
        assert error_paths(assert_problem(response, 422)) == ["/config"], text

    detail = client.get(f"{API}/modules/conf", headers=admin)
    assert detail.status_code == 200
    assert detail.json()["config"] == {}


def test_nested_manifest_within_the_depth_limit_is_served(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    nested: Any = []
    for _ in range(60):
        nested = [nested]
    register(client, tokens["admin"], manifest("nested", metadata={"d": nested}))

    response = client.get(f"{API}/modules/nested", headers=admin)

    assert response.status_code == 200
    assert response.json()["manifest"]["metadata"]["d"] == nested


def test_hostile_inputs_never_answer_5xx(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    long_author = manifest("long-author", author="a" * 300, license="l" * 150)
    long_range = manifest("long-range", dependencies={"modules": {"dep": " ".join([">=1"] * 200)}})
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/modules/a%00b", {}),
        ("PUT", "/modules/a%00b/status", {"json": {"status": "ENABLED"}}),
        ("PUT", "/modules/a%00b/config", {"json": {"config": {}}}),
        ("DELETE", "/modules/a%00b", {}),
        ("GET", "/modules", {"params": {"q": "a\x00b"}}),
        ("GET", "/modules", {"params": {"offset": 2**63}}),
        ("GET", "/audit", {"params": {"target": "t\x00"}}),
        ("GET", "/audit", {"params": {"offset": 2**64}}),
        ("POST", "/auth/login", {"json": {"username": "a\x00", "password": "x"}}),
        ("POST", "/users", {"json": {"username": "ok", "password": "p" * 9, "role": "r\x00"}}),
        ("PUT", "/roles/r%00/permissions/a:b", {}),
        ("PUT", "/roles/viewer/permissions/a:" + "b" * 300, {}),
        ("DELETE", "/roles/viewer/permissions/a:" + "b" * 300, {}),
        ("POST", "/modules", {"json": {"manifest": long_author}}),
        ("POST", "/modules", {"json": {"manifest": long_range}}),
        ("GET", "/modules/" + "n" * 3000, {}),
    ]

    answers = {}
    for method, path, kwargs in requests:
        response = client.request(method, API + path, headers=admin, **kwargs)
        answers[method, path[:40], str(kwargs)[:60]] = response.status_code
        if response.status_code >= 400:
            assert_problem(response, response.status_code)

    assert {k: v for k, v in answers.items() if v >= 500} == {}
    assert client.get("/healthz").status_code == 200
    assert client.get(f"{API}/modules", headers=bearer(tokens["viewer"])).status_code == 200


# -- 401, 403, 429 -------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWRtaW46eA=="},
        {"Authorization": "Bearer mh_not-an-api-token"},
    ],
)
def test_401_carries_www_authenticate_bearer(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get(f"{API}/modules", headers=headers)

    problem = assert_problem(response, 401)
    assert problem["type"] == "urn:modhub:problem:unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_password_is_401(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post(f"{API}/auth/login", json={"username": "viewer", "password": "nope"})

    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    unknown = client.post(f"{API}/auth/login", json={"username": "ghost", "password": "nope"})
    assert assert_problem(unknown, 401)["detail"] == response.json()["detail"]


def test_403_names_the_missing_permission(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post(
        f"{API}/modules", json={"manifest": manifest("nope")}, headers=bearer(tokens["viewer"])
    )

    problem = assert_problem(response, 403)
    assert problem["type"] == "urn:modhub:problem:forbidden"
    assert problem["permission"] == "modules:admin"
    assert "modules:admin" in problem["detail"]


def test_repeated_failed_logins_are_429_with_retry_after(
    client: TestClient, tokens: dict[str, str], services: Services
) -> None:
    limit = services.settings.login_max_failures
    wrong = {"username": "operator", "password": "wrong password"}

    failures = [client.post(f"{API}/auth/login", json=wrong).status_code for _ in range(limit)]
    locked = client.post(f"{API}/auth/login", json=wrong)
    right = client.post(f"{API}/auth/login", json={"username": "operator", "password": PASSWORD})

    assert failures == [401] * limit
    problem = assert_problem(locked, 429)
    assert problem["type"] == "urn:modhub:problem:too-many-attempts"
    retry_after = int(locked.headers["retry-after"])
    assert 0 < retry_after <= services.settings.login_lockout_seconds + 1
    assert problem["retryAfter"] == retry_after
    assert_problem(right, 429)
    assert "retry-after" in right.headers
    other = client.post(f"{API}/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert other.status_code == 200
