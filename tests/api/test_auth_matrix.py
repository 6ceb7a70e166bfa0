"""Every endpoint by every kind of caller → 401, 403, or served, on SQLite and PostgreSQL.

Permission model (the design brief): viewer has `modules:read`; operator also
`modules:write` (status, config); admin everything (register, delete, users, roles).
API tokens are listed and revoked by any user (their own; an admin's, anyone's).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from modhub.db.models import User
from modhub.keys import derive_key
from modhub.services import Services
from tests.api.conftest import API, assert_problem, manifest, register
from tests.conftest import PASSWORD, ROLES, SECRET, bearer

READ, WRITE, ADMIN, USERS = "modules:read", "modules:write", "modules:admin", "users:admin"
METRICS = "metrics:read"
ANY_USER = "any authenticated user"
# What each role may do, as the design brief states it (not as the code computes it).
GRANTS = {
    "viewer": {READ},
    "operator": {READ, WRITE},
    "admin": {READ, WRITE, ADMIN, USERS, METRICS},
}

# (method, path, body, permission needed; None = public)
ENDPOINTS: list[tuple[str, str, Any, str | None]] = [
    ("GET", "/healthz", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/metrics", None, METRICS),
    ("POST", f"{API}/auth/login", {"username": "viewer", "password": PASSWORD}, None),
    ("GET", f"{API}/modules", None, READ),
    ("GET", f"{API}/modules/target", None, READ),
    ("POST", f"{API}/modules/validate", {"manifest": manifest("checked")}, READ),
    ("GET", f"{API}/schemas/manifest", None, READ),
    ("GET", f"{API}/audit", None, READ),
    ("GET", f"{API}/cluster/nodes", None, READ),
    ("PUT", f"{API}/modules/target/status", {"status": "DISABLED"}, WRITE),
    ("PUT", f"{API}/modules/target/config", {"config": {}}, WRITE),
    ("POST", f"{API}/modules", {"manifest": manifest("fresh")}, ADMIN),
    ("DELETE", f"{API}/modules/doomed", None, ADMIN),
    ("GET", f"{API}/modules/target/store", None, ADMIN),
    ("GET", f"{API}/modules/target/store/vm/1", None, ADMIN),
    ("DELETE", f"{API}/modules/target/store/vm/1", None, ADMIN),
    ("POST", f"{API}/users", {"username": "newbie", "password": PASSWORD, "role": "viewer"}, USERS),
    ("GET", f"{API}/roles", None, USERS),
    ("PUT", f"{API}/roles/viewer/permissions/demo:read", None, USERS),
    ("DELETE", f"{API}/roles/viewer/permissions/demo:read", None, USERS),
    ("GET", f"{API}/tokens", None, ANY_USER),
    ("DELETE", f"{API}/tokens/{{victim}}", None, ANY_USER),  # a token of the viewer's
]
BAD_CREDENTIALS = (
    "none",
    "expired",
    "alg-none",
    "wrong-key",
    "tampered",
    "unknown-user",
    "garbage",
    "bogus-api-token",
)
CALLERS = (*ROLES, *(f"api-{role}" for role in ROLES), *BAD_CREDENTIALS)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(sub: str = "admin", **extra: Any) -> dict[str, Any]:
    """Return the claims of an access token as the server issues them."""
    now = int(time.time())
    return {
        "sub": sub,
        "role": "admin",
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        **extra,
    }


def server_key() -> bytes:
    """Return the key the server signs access tokens with (derived from its secret)."""
    return derive_key(SECRET, "modhub access token")


def credentials(services: Services, tokens: dict[str, str]) -> dict[str, dict[str, str]]:
    """Return the Authorization header of every kind of caller ({} for no token)."""
    now = int(time.time())
    out = {role: bearer(tokens[role]) for role in ROLES}
    for role in ROLES:
        out[f"api-{role}"] = bearer(services.auth.create_api_token(role, f"{role}-script"))
    header, _, signature = tokens["viewer"].split(".")
    forged = {
        "none": {},
        "expired": bearer(
            jwt.encode(claims(iat=now - 7200, exp=now - 3600), server_key(), algorithm="HS256")
        ),
        "alg-none": bearer(jwt.encode(claims(), None, algorithm="none")),
        "wrong-key": bearer(
            jwt.encode(claims(), "some-other-secret-key-0123456789abcdef", algorithm="HS256")
        ),
        "tampered": bearer(f"{header}.{_b64(claims())}.{signature}"),
        "unknown-user": bearer(jwt.encode(claims("ghost"), server_key(), algorithm="HS256")),
        "garbage": bearer("garbage"),
        "bogus-api-token": bearer("mh_" + "A" * 43),
    }
    out.update({name: forged[name] for name in BAD_CREDENTIALS})
    return out


def expected(caller: str, permission: str | None) -> str:
    """Return 'served', '401' or '403' for `caller` on an endpoint needing `permission`."""
    if permission is None:
        return "served"
    if caller in BAD_CREDENTIALS:
        return "401"
    if permission == ANY_USER:
        return "served"
    role = caller.removeprefix("api-")
    return "served" if permission in GRANTS[role] else "403"


def outcome(status: int) -> str:
    return str(status) if status in (401, 403) else "served"


def test_the_forged_tokens_are_well_formed(services: Services, tokens: dict[str, str]) -> None:
    """The bad tokens fail for the reason they are named after, not by being malformed."""
    headers = credentials(services, tokens)

    def token(name: str) -> str:
        return headers[name]["Authorization"].removeprefix("Bearer ")

    assert jwt.get_unverified_header(token("alg-none"))["alg"] == "none"
    assert jwt.decode(token("alg-none"), options={"verify_signature": False})["sub"] == "admin"
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token("expired"), server_key(), algorithms=["HS256"])
    assert jwt.decode(token("unknown-user"), server_key(), algorithms=["HS256"])["sub"] == "ghost"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token("wrong-key"), server_key(), algorithms=["HS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token("tampered"), server_key(), algorithms=["HS256"])
    assert jwt.decode(tokens["admin"], server_key(), algorithms=["HS256"])["sub"] == "admin"


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    ENDPOINTS,
    ids=[f"{m} {p.removeprefix(API)}" for m, p, _, _ in ENDPOINTS],
)
def test_matrix(
    client: TestClient,
    services: Services,
    tokens: dict[str, str],
    method: str,
    path: str,
    body: Any,
    permission: str | None,
) -> None:
    register(client, tokens["admin"], manifest("target"))
    register(client, tokens["admin"], manifest("doomed"))
    headers = credentials(services, tokens)
    services.auth.create_api_token("viewer", "victim")
    [victim] = [t.id for t in services.auth.api_tokens("viewer") if t.name == "victim"]
    path = path.replace("{victim}", str(victim))

    actual = {}
    for caller in CALLERS:
        response = client.request(method, path, json=body, headers=headers[caller])
        assert response.status_code < 500, (caller, response.text)
        actual[caller] = outcome(response.status_code)
        if response.status_code == 401:
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        elif response.status_code == 403:
            assert assert_problem(response, 403)["permission"] == permission

    assert actual == {caller: expected(caller, permission) for caller in CALLERS}


def test_a_refused_caller_changes_nothing(
    client: TestClient, tokens: dict[str, str], services: Services
) -> None:
    register(client, tokens["admin"], manifest("target"))
    viewer, operator = bearer(tokens["viewer"]), bearer(tokens["operator"])

    refused = [
        client.put(f"{API}/modules/target/status", json={"status": "ENABLED"}, headers=viewer),
        client.delete(f"{API}/modules/target", headers=operator),
        client.post(f"{API}/modules", json={"manifest": manifest("sneaky")}, headers=operator),
        client.put(f"{API}/roles/operator/permissions/users:admin", headers=operator),
        client.post(
            f"{API}/users",
            json={"username": "mallory", "password": PASSWORD, "role": "admin"},
            headers=operator,
        ),
    ]

    assert [r.status_code for r in refused] == [403] * len(refused)
    detail = client.get(f"{API}/modules/target", headers=viewer).json()
    assert detail["status"] == "REGISTERED"
    names = [m["name"] for m in client.get(f"{API}/modules", headers=viewer).json()["items"]]
    assert names == ["target"]
    assert "users:admin" not in services.auth.roles()["operator"]
    login = client.post(f"{API}/auth/login", json={"username": "mallory", "password": PASSWORD})
    assert login.status_code == 401


def test_a_disabled_user_s_tokens_stop_working(
    client: TestClient, tokens: dict[str, str], services: Services
) -> None:
    api_token = services.auth.create_api_token("operator")
    assert client.get(f"{API}/modules", headers=bearer(api_token)).status_code == 200
    with services.db.write() as session:
        session.execute(update(User).where(User.username == "operator").values(active=False))

    for token in (tokens["operator"], api_token):
        response = client.get(f"{API}/modules", headers=bearer(token))
        assert_problem(response, 401)
