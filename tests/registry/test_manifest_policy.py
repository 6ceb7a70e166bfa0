"""What the server accepts in a manifest, through the registry and the API, on SQLite and
PostgreSQL: requirements (MODHUB_PIP_ALLOW_DIRECT_REFERENCES), permissions in the module's
namespace, and values no longer than the registry stores (issue 11 items 3, 13b, 13d)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.db.models import Module, ModuleDependency, ModuleVersion, RolePermission
from modhub.errors import InvalidInput
from modhub.manifest import model
from modhub.services import Services
from modhub.settings import Settings
from tests.api.conftest import API, assert_problem, error_paths
from tests.conftest import SECRET, bearer
from tests.registry.helpers import ACTOR, manifest

LOCAL = "localpkg @ /tmp/x.tar.gz"
FILE_URL = "x @ FILE:///tmp/x-1.0-py3-none-any.whl"
VCS_FILE = "x @ git+file:///srv/x"
DIRECT = "x @ https://example.org/x-1.0-py3-none-any.whl"
VCS = "x @ git+https://example.org/x.git@v1"


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The conftest's settings, with MODHUB_PIP_ALLOW_DIRECT_REFERENCES as the test's
    indirect parameter (off by default)."""
    allowed = getattr(request, "param", False)
    return settings.model_copy(update={"pip_allow_direct_references": allowed})


both_settings = pytest.mark.parametrize(
    "settings", [False, True], indirect=True, ids=["direct-refused", "direct-allowed"]
)


def requiring(requirement: str, name: str = "app") -> dict[str, Any]:
    return manifest(name, dependencies={"python": ["httpx>=0.27", requirement]})


def validate(client: TestClient, token: str, data: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"{API}/modules/validate", json={"manifest": data}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["path"], e["code"]) for e in body["errors"]]


# --- requirements -------------------------------------------------------------------------


@both_settings
@pytest.mark.parametrize("requirement", [LOCAL, FILE_URL, VCS_FILE])
def test_local_requirements_are_refused_whatever_the_setting(
    services: Services, client: TestClient, tokens: dict[str, str], requirement: str
) -> None:
    data = requiring(requirement)

    body = validate(client, tokens["viewer"], data)
    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )

    assert codes(body) == [("/dependencies/python/1", "local_requirement")]
    problem = assert_problem(response, 422)
    assert error_paths(problem) == ["/manifest/dependencies/python/1"]
    assert problem["errors"][0]["code"] == "local_requirement"
    assert services.registry.list_modules().total == 0


@both_settings
@pytest.mark.parametrize("requirement", [DIRECT, VCS])
def test_direct_references_follow_the_operators_setting(
    settings: Settings,
    services: Services,
    client: TestClient,
    tokens: dict[str, str],
    requirement: str,
) -> None:
    data = requiring(requirement)

    body = validate(client, tokens["viewer"], data)
    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )

    if settings.pip_allow_direct_references:
        assert body["valid"], body
        assert response.status_code == 201, response.text
    else:
        assert codes(body) == [("/dependencies/python/1", "direct_reference")]
        problem = assert_problem(response, 422)
        assert [(e["path"], e["code"]) for e in problem["errors"]] == [
            ("/manifest/dependencies/python/1", "direct_reference")
        ]
        assert services.registry.list_modules().total == 0


@both_settings
def test_the_registry_applies_the_setting_to_new_versions(
    settings: Settings, services: Services
) -> None:
    services.registry.register(manifest("app"), actor=ACTOR)

    def register() -> None:
        services.registry.register(
            manifest("app", "1.1.0", dependencies={"python": [DIRECT]}), actor=ACTOR
        )

    if settings.pip_allow_direct_references:
        register()
        assert [v.version for v in services.registry.get("app").versions] == ["1.1.0", "1.0.0"]
    else:
        with pytest.raises(InvalidInput) as caught:
            register()
        assert [e["code"] for e in caught.value.errors or []] == ["direct_reference"]


def test_the_setting_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_PIP_ALLOW_DIRECT_REFERENCES", "true")
    started = Services.start(Settings(data_dir=tmp_path / "data", secret_key=SECRET))
    try:
        assert started.registry.allow_direct_references is True
        assert started.registry.validate(requiring(DIRECT)).valid
    finally:
        started.close()


# --- permissions --------------------------------------------------------------------------


@pytest.mark.parametrize("permission", ["users:admin", "modules:admin", "modules:read", "other:x"])
def test_a_manifest_cannot_declare_a_permission_outside_its_namespace(
    services: Services, client: TestClient, tokens: dict[str, str], permission: str
) -> None:
    data = manifest("evil", permissions=["evil:read", permission])

    body = validate(client, tokens["viewer"], data)
    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )

    assert codes(body) == [("/permissions/1", "foreign_permission")]
    problem = assert_problem(response, 422)
    assert [(e["path"], e["code"]) for e in problem["errors"]] == [
        ("/manifest/permissions/1", "foreign_permission")
    ]
    assert services.registry.list_modules().total == 0


def test_the_seeds_family_namespace_is_registered(
    client: TestClient, tokens: dict[str, str]
) -> None:
    data = manifest("vmware-vcenter", permissions=["vmware:read", "vmware-vcenter:admin"])

    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )

    assert response.status_code == 201, response.text


# --- lengths: one set of limits for the validator and the registry ------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"author": "a" * 201}, "/author"),
        ({"license": "l" * 101}, "/license"),
        ({"permissions": ["app:" + "r" * 125]}, "/permissions/0"),
    ],
)
def test_validate_refuses_what_registration_refuses(
    services: Services,
    client: TestClient,
    tokens: dict[str, str],
    fields: dict[str, Any],
    path: str,
) -> None:
    data = manifest("app", **fields)

    body = validate(client, tokens["viewer"], data)
    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )

    assert codes(body) == [(path, "too_long")]
    problem = assert_problem(response, 422)
    assert [(e["path"], e["code"]) for e in problem["errors"]] == [(f"/manifest{path}", "too_long")]
    assert services.registry.list_modules().total == 0


def test_values_at_their_limits_validate_and_register(
    client: TestClient, tokens: dict[str, str]
) -> None:
    data = manifest("app", author="a" * 200, license="l" * 100, permissions=["app:" + "r" * 124])

    assert validate(client, tokens["viewer"], data)["valid"]
    response = client.post(
        f"{API}/modules", json={"manifest": data}, headers=bearer(tokens["admin"])
    )
    assert response.status_code == 201, response.text


def test_the_manifests_limits_are_the_registrys_columns() -> None:
    def length(column: Any) -> int:
        return int(column.property.columns[0].type.length)

    assert length(Module.display_name) == model.MAX_DISPLAY_NAME
    assert length(Module.author) == model.MAX_AUTHOR
    assert length(Module.license) == model.MAX_LICENSE
    assert model.MAX_VERSION == length(Module.version) == length(ModuleVersion.version)
    assert length(ModuleDependency.version_range) == model.MAX_RANGE
    assert length(RolePermission.permission) == model.MAX_PERMISSION
    assert length(Module.name) == 64  # the name pattern allows 2-64 characters
