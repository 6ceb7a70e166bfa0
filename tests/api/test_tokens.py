"""GET /tokens and DELETE /tokens/{id}: who sees and revokes which API token, and lastUsedAt."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from modhub.db.models import ApiToken
from modhub.services import Services
from tests.api.conftest import API, assert_problem
from tests.api.test_auth_matrix import BAD_CREDENTIALS, credentials
from tests.conftest import ROLES, bearer

FIELDS = {"id", "user", "name", "prefix", "createdAt", "lastUsedAt", "revoked"}


def scripts(services: Services) -> dict[str, str]:
    """Create an API token per user of `tokens` (named `<user>-script`); return them."""
    return {user: services.auth.create_api_token(user, f"{user}-script") for user in ROLES}


def listed(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"{API}/tokens", headers=headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def id_of(services: Services, name: str) -> int:
    [found] = [t.id for t in services.auth.api_tokens() if t.name == name]
    return found


def test_an_admin_lists_every_token_without_secrets(
    client: TestClient, services: Services, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    issued = scripts(services)

    response = client.get(f"{API}/tokens", headers=admin)

    assert response.status_code == 200, response.text
    items = response.json()
    assert [(t["user"], t["name"]) for t in items] == [(u, f"{u}-script") for u in ROLES]
    for item in items:
        assert set(item) == FIELDS
        assert isinstance(item["id"], int)
        assert item["prefix"] == issued[item["user"]][:10]
        assert item["createdAt"].endswith(("Z", "+00:00"))
        assert item["lastUsedAt"] is None
        assert item["revoked"] is False
    with services.db.read() as session:
        digests = [t.token_hash for t in session.query(ApiToken)]
    assert all(secret not in response.text for secret in (*issued.values(), *digests))


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_any_other_user_lists_their_own(
    client: TestClient, services: Services, tokens: dict[str, str], role: str
) -> None:
    issued = scripts(services)
    services.auth.create_api_token(role, "second")
    expected = [(role, f"{role}-script"), (role, "second")]

    by_access_token = listed(client, bearer(tokens[role]))
    by_api_token = listed(client, bearer(issued[role]))

    assert [(t["user"], t["name"]) for t in by_access_token] == expected
    assert [(t["user"], t["name"]) for t in by_api_token] == expected


def test_a_user_revokes_their_own_token_and_it_is_refused_at_once(
    client: TestClient, services: Services, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    issued = scripts(services)
    viewer_script = bearer(issued["viewer"])
    assert client.get(f"{API}/modules", headers=viewer_script).status_code == 200
    target = id_of(services, "viewer-script")

    response = client.delete(f"{API}/tokens/{target}", headers=bearer(tokens["viewer"]))

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(client.get(f"{API}/modules", headers=viewer_script), 401)
    assert [(t["name"], t["revoked"]) for t in listed(client, bearer(tokens["viewer"]))] == [
        ("viewer-script", True)
    ]
    assert client.get(f"{API}/modules", headers=bearer(issued["operator"])).status_code == 200
    audit = client.get(f"{API}/audit", params={"target": "viewer"}, headers=admin).json()
    revocations = [
        (e["actor"], e["detail"]) for e in audit["items"] if e["action"] == "token.revoke"
    ]
    assert revocations == [("viewer", {"id": target, "name": "viewer-script"})]
    assert issued["viewer"] not in str(audit)
    assert issued["viewer"][:10] not in str(audit)


def test_a_token_can_revoke_itself(client: TestClient, services: Services) -> None:
    services.auth.create_user("robot", "viewer", "robot's password")
    token = services.auth.create_api_token("robot", "self")

    response = client.delete(f"{API}/tokens/{id_of(services, 'self')}", headers=bearer(token))

    assert response.status_code == 204, response.text
    assert_problem(client.get(f"{API}/tokens", headers=bearer(token)), 401)


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_another_user_s_token_is_not_found_for_a_non_admin(
    client: TestClient, services: Services, tokens: dict[str, str], role: str
) -> None:
    issued = scripts(services)
    others = [user for user in ROLES if user != role]

    for other in others:
        response = client.delete(
            f"{API}/tokens/{id_of(services, f'{other}-script')}", headers=bearer(tokens[role])
        )
        assert "no API token" in assert_problem(response, 404)["detail"]

    for other in others:
        assert client.get(f"{API}/modules", headers=bearer(issued[other])).status_code == 200
    assert not any(t.revoked for t in services.auth.api_tokens())


def test_an_admin_revokes_any_token(
    client: TestClient, services: Services, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    issued = scripts(services)

    for user in ("operator", "viewer"):
        response = client.delete(f"{API}/tokens/{id_of(services, f'{user}-script')}", headers=admin)
        assert response.status_code == 204, response.text
        assert_problem(client.get(f"{API}/modules", headers=bearer(issued[user])), 401)

    again = client.delete(f"{API}/tokens/{id_of(services, 'viewer-script')}", headers=admin)
    assert again.status_code == 204  # already revoked: nothing changes
    audit = client.get(f"{API}/audit", headers=admin).json()["items"]
    assert [(e["actor"], e["target"]) for e in audit if e["action"] == "token.revoke"] == [
        ("admin", "viewer"),
        ("admin", "operator"),
    ]


@pytest.mark.parametrize(
    ("token_id", "status"), [("999", 404), ("0", 404), (str(2**63), 404), ("abc", 422)]
)
def test_unknown_or_malformed_ids(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    token_id: str,
    status: int,
) -> None:
    scripts(services)

    assert_problem(client.delete(f"{API}/tokens/{token_id}", headers=admin), status)

    assert not any(t.revoked for t in services.auth.api_tokens())


def test_bad_credentials_revoke_nothing(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    headers = credentials(services, tokens)
    target = id_of(services, "viewer-script")

    for caller in BAD_CREDENTIALS:
        response = client.delete(f"{API}/tokens/{target}", headers=headers[caller])
        assert_problem(response, 401)

    assert client.get(f"{API}/modules", headers=headers["api-viewer"]).status_code == 200
    assert not any(t.revoked for t in services.auth.api_tokens())


def test_last_used_at_is_shown_after_a_use(
    client: TestClient, services: Services, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    issued = scripts(services)

    assert client.get(f"{API}/modules", headers=bearer(issued["operator"])).status_code == 200
    services.auth.token_uses.flush(timeout=30)

    used = {t["name"]: t["lastUsedAt"] for t in listed(client, admin)}
    assert used["operator-script"] is not None
    assert used["viewer-script"] is None
    assert used["admin-script"] is None  # the admin listed with an access token


class BrokenDatabase:
    """A database whose writes fail."""

    def write(self) -> Any:
        raise OperationalError("UPDATE api_tokens", {}, Exception("database is locked"))


def test_a_failing_last_use_write_does_not_fail_the_request(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.auth.create_user("robot", "viewer", "robot's password")
    token = services.auth.create_api_token("robot", "ci")
    monkeypatch.setattr(services.auth.token_uses, "db", BrokenDatabase())

    response = client.get(f"{API}/modules", headers=bearer(token))
    services.auth.token_uses.flush(timeout=30)

    assert response.status_code == 200, response.text
    assert client.get(f"{API}/tokens", headers=bearer(token)).status_code == 200
    [info] = services.auth.api_tokens()
    assert info.last_used_at is None
