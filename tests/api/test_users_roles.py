"""Users and roles through the API: create users, list roles, grant and revoke permissions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modhub.auth import Principal
from modhub.services import Services
from tests.api.conftest import API, assert_problem, error_paths
from tests.conftest import PASSWORD, bearer


def principal(services: Services, token: str) -> Principal:
    """Return who the server takes the bearer of `token` for, with their permissions."""
    return services.auth.authenticate(f"Bearer {token}")


def test_admin_creates_a_user_who_can_log_in(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    response = client.post(
        f"{API}/users",
        json={"username": "carol", "password": "carol's long password", "role": "operator"},
        headers=admin,
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"username": "carol", "role": "operator"}
    login = client.post(
        f"{API}/auth/login", json={"username": "carol", "password": "carol's long password"}
    )
    assert login.status_code == 200, login.text
    body = login.json()
    assert set(body) == {"accessToken", "tokenType", "expiresIn"}
    assert body["tokenType"] == "bearer"
    assert body["expiresIn"] == services.settings.access_token_ttl
    carol = principal(services, body["accessToken"])
    assert (carol.username, carol.role) == ("carol", "operator")
    assert carol.can("modules:write")
    assert not carol.can("modules:admin")
    audit = client.get(f"{API}/audit", params={"target": "carol"}, headers=admin).json()
    assert [(e["actor"], e["action"]) for e in audit["items"]] == [("admin", "user.create")]
    assert "carol's long password" not in str(audit)


def test_creating_a_taken_user_name_is_409(client: TestClient, admin: dict[str, str]) -> None:
    user = {"username": "viewer", "password": PASSWORD, "role": "admin"}

    response = client.post(f"{API}/users", json=user, headers=admin)

    assert "viewer" in assert_problem(response, 409)["detail"]


def test_an_invalid_user_lists_every_problem(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/users",
        json={"username": "bad name!", "password": "short", "role": "operator"},
        headers=admin,
    )

    assert sorted(error_paths(assert_problem(response, 422))) == ["/password", "/username"]


def test_an_unknown_role_is_422(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/users",
        json={"username": "dave", "password": PASSWORD, "role": "superuser"},
        headers=admin,
    )

    problem = assert_problem(response, 422)
    assert error_paths(problem) == ["/role"]
    assert "superuser" in problem["detail"]


def test_roles_lists_the_built_in_roles(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{API}/roles", headers=admin)

    assert response.status_code == 200
    roles = {role["name"]: role["permissions"] for role in response.json()}
    assert roles == {
        "admin": ["*"],
        "metrics": ["metrics:read"],
        "operator": ["modules:read", "modules:write"],
        "viewer": ["modules:read"],
    }


def test_granting_a_module_permission_reaches_the_operator(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str], services: Services
) -> None:
    assert not principal(services, tokens["operator"]).can("vmware:read")

    response = client.put(f"{API}/roles/operator/permissions/vmware:read", headers=admin)

    assert response.status_code == 204, response.text
    assert response.content == b""
    operator = principal(services, tokens["operator"])
    assert operator.can("vmware:read")
    assert "vmware:read" in operator.permissions
    assert not operator.can("vmware:write")
    assert not principal(services, tokens["viewer"]).can("vmware:read")
    api_token = services.auth.create_api_token("operator")
    assert principal(services, api_token).can("vmware:read")
    roles = {r["name"]: r["permissions"] for r in client.get(f"{API}/roles", headers=admin).json()}
    assert roles["operator"] == ["modules:read", "modules:write", "vmware:read"]
    audit = client.get(f"{API}/audit", params={"target": "operator"}, headers=admin).json()
    grants = [(e["actor"], e["detail"]) for e in audit["items"] if e["action"] == "role.grant"]
    assert grants == [("admin", {"permission": "vmware:read"})]


def test_granting_twice_is_harmless(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str], services: Services
) -> None:
    for _ in range(2):
        response = client.put(f"{API}/roles/viewer/permissions/vmware:*", headers=admin)
        assert response.status_code == 204

    assert services.auth.roles()["viewer"] == ["modules:read", "vmware:*"]
    assert principal(services, tokens["viewer"]).can("vmware:delete")


def test_revoking_takes_the_permission_away(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str], services: Services
) -> None:
    granted = client.put(f"{API}/roles/operator/permissions/vmware:read", headers=admin)
    assert granted.status_code == 204
    assert principal(services, tokens["operator"]).can("vmware:read")

    response = client.delete(f"{API}/roles/operator/permissions/vmware:read", headers=admin)

    assert response.status_code == 204, response.text
    assert not principal(services, tokens["operator"]).can("vmware:read")
    again = client.delete(f"{API}/roles/operator/permissions/vmware:read", headers=admin)
    assert_problem(again, 404)


def test_revoking_a_built_in_permission_applies_at_once(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    viewer = bearer(tokens["viewer"])
    assert client.get(f"{API}/modules", headers=viewer).status_code == 200

    response = client.delete(f"{API}/roles/viewer/permissions/modules:read", headers=admin)

    assert response.status_code == 204
    assert assert_problem(client.get(f"{API}/modules", headers=viewer), 403)["permission"] == (
        "modules:read"
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/roles/nobody/permissions/vmware:read", 404),
        ("PUT", "/roles/operator/permissions/not-a-permission", 422),
        ("PUT", "/roles/operator/permissions/Vmware:Read", 422),
        ("PUT", "/roles/admin/permissions/vmware:read", 409),
        ("DELETE", "/roles/admin/permissions/modules:read", 409),
        ("DELETE", "/roles/operator/permissions/vmware:read", 404),
        ("DELETE", "/roles/operator/permissions/bad", 422),
    ],
)
def test_grant_and_revoke_refusals(
    client: TestClient, admin: dict[str, str], method: str, path: str, status: int
) -> None:
    before = client.get(f"{API}/roles", headers=admin).json()

    response = client.request(method, API + path, headers=admin)

    assert_problem(response, status)
    assert client.get(f"{API}/roles", headers=admin).json() == before
