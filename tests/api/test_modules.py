"""The seed's module endpoints with the shapes of the design brief, on SQLite and PostgreSQL."""

from __future__ import annotations

import inspect
import json
from datetime import datetime
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from modhub.api.routers import modules
from modhub.db.models import Module
from modhub.services import Services
from tests.api.conftest import (
    API,
    MASK,
    VMWARE_CONFIG,
    assert_problem,
    depends,
    error_paths,
    manifest,
    register,
    set_status,
    vmware,
)
from tests.conftest import bearer

# The seed's "Test 1" and "Test 2" request bodies, verbatim.
SEED_TEST1 = {
    "manifest": {
        "name": "example-module",
        "version": "1.0.0",
        "displayName": "Example Module",
        "description": "A test module",
        "author": "Test Author",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/hello", "handler": "handlers/hello.ts"}]}
        },
    }
}
SEED_TEST2 = {
    "manifest": {
        "name": "example-module",
        "version": "1.0.0",
        "displayName": "Example Module",
        "description": "A test module for demonstration",
        "author": "Automation Platform Team",
        "capabilities": {
            "api": {
                "routes": [{"method": "GET", "path": "/status", "handler": "handlers/status.ts"}]
            }
        },
    }
}
DETAIL_FIELDS = {
    "name",
    "version",
    "displayName",
    "description",
    "author",
    "license",
    "status",
    "manifest",
    "config",
    "dependencies",
    "dependents",
    "versions",
    "path",
    "lastError",
    "createdAt",
    "updatedAt",
}
SUMMARY_FIELDS = DETAIL_FIELDS - {
    "manifest",
    "config",
    "dependencies",
    "dependents",
    "versions",
    "path",
}


def names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["items"]]


def get(client: TestClient, admin: dict[str, str], name: str) -> dict[str, Any]:
    response = client.get(f"{API}/modules/{name}", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def configure_vmware(client: TestClient, admin: dict[str, str]) -> None:
    response = client.put(
        f"{API}/modules/vmware-vcenter/config", json={"config": VMWARE_CONFIG}, headers=admin
    )
    assert response.status_code == 200, response.text


# -- POST /modules -----------------------------------------------------------------------


def test_register_answers_201_with_the_registered_module(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(f"{API}/modules", json=SEED_TEST2, headers=admin)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= DETAIL_FIELDS
    assert body["name"] == "example-module"
    assert body["version"] == "1.0.0"
    assert body["displayName"] == "Example Module"
    assert body["description"] == "A test module for demonstration"
    assert body["author"] == "Automation Platform Team"
    assert body["status"] == "REGISTERED"
    assert body["manifest"] == SEED_TEST2["manifest"]
    assert [v["version"] for v in body["versions"]] == ["1.0.0"]
    assert body["versions"][0]["active"] is True
    assert get(client, admin, "example-module")["status"] == "REGISTERED"


def test_register_applies_config_defaults(client: TestClient, tokens: dict[str, str]) -> None:
    register(client, tokens["admin"], manifest("core-auth"))

    body = register(client, tokens["admin"], vmware())

    assert body["config"] == {"syncInterval": 6}


def test_register_same_name_and_version_is_409(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post(f"{API}/modules", json=SEED_TEST2, headers=admin).status_code == 201

    response = client.post(f"{API}/modules", json=SEED_TEST1, headers=admin)

    body = assert_problem(response, 409)
    assert "example-module" in body["detail"]
    assert "1.0.0" in body["detail"]
    assert get(client, admin, "example-module")["description"] == (
        "A test module for demonstration"
    )


def test_register_invalid_manifest_is_422_with_every_error(
    client: TestClient, admin: dict[str, str]
) -> None:
    bad = {
        "name": "Bad Name",
        "version": "1.0",
        "capabilities": {"api": {"routes": [{"method": "FETCH", "path": "/x", "handler": "h.py"}]}},
    }

    response = client.post(f"{API}/modules", json={"manifest": bad}, headers=admin)

    body = assert_problem(response, 422)
    paths = error_paths(body)
    assert "/manifest/name" in paths
    assert "/manifest/version" in paths
    assert "/manifest/displayName" in paths
    assert any(p.startswith("/manifest/capabilities/api/routes/0/method") for p in paths)
    listed = client.get(f"{API}/modules", headers=admin).json()
    assert listed["total"] == 0


def test_register_closing_a_dependency_cycle_is_422_naming_it(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], depends("alpha", {"beta": "^1.0.0"}))
    register(client, tokens["admin"], depends("beta", {"gamma": "^1.0.0"}))

    response = client.post(
        f"{API}/modules",
        json={"manifest": depends("gamma", {"alpha": "^1.0.0"})},
        headers=admin,
    )

    body = assert_problem(response, 422)
    assert body["type"].endswith("dependency-cycle")
    assert body["cycle"] == ["gamma", "alpha", "beta", "gamma"]
    assert "gamma" in body["detail"]
    assert "alpha" in body["detail"]
    assert "beta" in body["detail"]
    assert error_paths(body) == ["/dependencies/modules/alpha"]
    assert client.get(f"{API}/modules/gamma", headers=admin).status_code == 404


def test_register_self_dependency_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{API}/modules", json={"manifest": depends("ouro", {"ouro": "^1.0.0"})}, headers=admin
    )

    assert_problem(response, 422)


def test_a_higher_version_is_stored_as_available(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("thing", "1.0.0"))

    body = register(client, tokens["admin"], manifest("thing", "1.1.0", description="newer"))

    assert body["version"] == "1.0.0"
    assert [(v["version"], v["active"]) for v in body["versions"]] == [
        ("1.1.0", False),
        ("1.0.0", True),
    ]
    detail = get(client, admin, "thing")
    assert detail["version"] == "1.0.0"
    assert detail["manifest"]["version"] == "1.0.0"
    assert client.get(f"{API}/modules", headers=admin).json()["total"] == 1


# -- GET /modules --------------------------------------------------------------------------


@pytest.fixture
def five(client: TestClient, tokens: dict[str, str], admin: dict[str, str]) -> None:
    """Register mod-a .. mod-e; mod-c is ENABLED; mod-d's description mentions 'Backup'."""
    for letter in "abcde":
        description = "Nightly Backup of VMs" if letter == "d" else f"module {letter}"
        register(client, tokens["admin"], manifest(f"mod-{letter}", description=description))
    assert set_status(client, tokens["admin"], "mod-c", "ENABLED").status_code == 200


@pytest.mark.usefixtures("five")
def test_list_has_items_total_limit_offset(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{API}/modules", headers=admin)

    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert page["total"] == 5
    assert page["limit"] == 50
    assert page["offset"] == 0
    assert names(page) == ["mod-a", "mod-b", "mod-c", "mod-d", "mod-e"]
    assert all(set(item) >= SUMMARY_FIELDS for item in page["items"])


PAGES = [
    # (limit, offset) -> the names on that page, always out of a total of 5
    ((2, 0), ["mod-a", "mod-b"]),
    ((2, 2), ["mod-c", "mod-d"]),
    ((2, 4), ["mod-e"]),
    ((2, 5), []),
    ((3, 1), ["mod-b", "mod-c", "mod-d"]),
    ((500, 0), ["mod-a", "mod-b", "mod-c", "mod-d", "mod-e"]),
    ((1, 100), []),
]
FILTERS: list[tuple[dict[str, Any], list[str], int]] = [
    # query parameters -> (names on the page, total)
    ({"status": "ENABLED"}, ["mod-c"], 1),
    ({"status": "REGISTERED"}, ["mod-a", "mod-b", "mod-d", "mod-e"], 4),
    ({"status": "DISABLED"}, [], 0),
    ({"q": "mod-b"}, ["mod-b"], 1),
    ({"q": "MOD-E"}, ["mod-e"], 1),
    ({"q": "backup"}, ["mod-d"], 1),
    ({"q": "Mod-"}, ["mod-a", "mod-b", "mod-c", "mod-d", "mod-e"], 5),
    ({"q": "nothing-like-it"}, [], 0),
    ({"q": "mod", "status": "ENABLED"}, ["mod-c"], 1),
    ({"q": "mod", "status": "REGISTERED", "limit": 2, "offset": 1}, ["mod-b", "mod-d"], 4),
    ({"status": "REGISTERED", "limit": 2, "offset": 3}, ["mod-e"], 4),
]


@pytest.mark.usefixtures("five")
def test_list_pages(client: TestClient, admin: dict[str, str]) -> None:
    expected = {page: (items, 5, page[0], page[1]) for page, items in PAGES}

    actual = {}
    for limit, offset in expected:
        params = {"limit": limit, "offset": offset}
        body = client.get(f"{API}/modules", params=params, headers=admin).json()
        actual[limit, offset] = (names(body), body["total"], body["limit"], body["offset"])

    assert actual == expected


@pytest.mark.usefixtures("five")
def test_list_filters(client: TestClient, admin: dict[str, str]) -> None:
    expected = {str(params): (items, total) for params, items, total in FILTERS}

    actual = {}
    for params, _, _ in FILTERS:
        body = client.get(f"{API}/modules", params=params, headers=admin).json()
        actual[str(params)] = (names(body), body["total"])

    assert actual == expected


def test_list_matches_display_name(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], {**manifest("plain-name"), "displayName": "Zebra Crossing"})

    page = client.get(f"{API}/modules", params={"q": "zebra"}, headers=admin).json()

    assert names(page) == ["plain-name"]


def test_list_refuses_invalid_parameters(client: TestClient, admin: dict[str, str]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"status": "ACTIVE"}, "query:status"),
        ({"status": "enabled"}, "query:status"),
        ({"limit": 0}, "query:limit"),
        ({"limit": 501}, "query:limit"),
        ({"limit": "ten"}, "query:limit"),
        ({"offset": -1}, "query:offset"),
        ({"offset": 10**20}, "query:offset"),
        ({"q": "x" * 201}, "query:q"),
    ]

    for params, path in cases:
        response = client.get(f"{API}/modules", params=params, headers=admin)
        body = assert_problem(response, 422)
        assert error_paths(body) == [path], params


# -- GET /modules/{name} ------------------------------------------------------------------


def test_detail_has_every_field(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("core-auth", "1.2.0"))
    register(client, tokens["admin"], vmware())
    configure_vmware(client, admin)

    detail = get(client, admin, "vmware-vcenter")

    assert set(detail) >= DETAIL_FIELDS
    assert detail["name"] == "vmware-vcenter"
    assert detail["version"] == "1.0.0"
    assert detail["displayName"] == "VMware vCenter Module"
    assert detail["description"] == "Manage VMware vCenter infrastructure"
    assert detail["author"] == "Automation Platform Team"
    assert detail["license"] == "MIT"
    assert detail["status"] == "REGISTERED"
    assert detail["manifest"] == vmware()
    assert detail["config"] == {**VMWARE_CONFIG, "vcenterPassword": MASK}
    assert detail["dependencies"] == [
        {
            "name": "core-auth",
            "range": "^1.0.0",
            "installedVersion": "1.2.0",
            "status": "REGISTERED",
            "satisfied": True,
        }
    ]
    assert detail["dependents"] == []
    assert detail["versions"] == [
        {"version": "1.0.0", "registeredAt": detail["versions"][0]["registeredAt"], "active": True}
    ]
    assert detail["path"] is None
    assert detail["lastError"] is None
    created = datetime.fromisoformat(detail["createdAt"])
    updated = datetime.fromisoformat(detail["updatedAt"])
    assert created.tzinfo is not None
    assert updated >= created
    core = get(client, admin, "core-auth")
    assert core["dependents"] == [
        {"name": "vmware-vcenter", "range": "^1.0.0", "version": "1.0.0", "status": "REGISTERED"}
    ]


def test_detail_reports_unsatisfied_dependencies(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("old-lib", "0.9.0"))
    register(client, tokens["admin"], depends("app", {"old-lib": "^1.0.0", "missing-lib": "1.x"}))

    deps = {d["name"]: d for d in get(client, admin, "app")["dependencies"]}

    assert deps["old-lib"]["installedVersion"] == "0.9.0"
    assert deps["old-lib"]["satisfied"] is False
    assert deps["missing-lib"] == {
        "name": "missing-lib",
        "range": "1.x",
        "installedVersion": None,
        "status": None,
        "satisfied": False,
    }


def test_detail_of_unknown_module_is_404(client: TestClient, admin: dict[str, str]) -> None:
    body = assert_problem(client.get(f"{API}/modules/no-such-module", headers=admin), 404)

    assert "no-such-module" in body["detail"]


# -- PUT /modules/{name}/status -------------------------------------------------------------


def test_enable_then_disable(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("solo"))

    enabled = set_status(client, tokens["operator"], "solo", "ENABLED")

    assert enabled.status_code == 200, enabled.text
    assert set(enabled.json()) >= DETAIL_FIELDS
    assert enabled.json()["status"] == "ENABLED"
    assert get(client, admin, "solo")["status"] == "ENABLED"
    disabled = set_status(client, tokens["operator"], "solo", "DISABLED")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "DISABLED"
    again = set_status(client, tokens["operator"], "solo", "ENABLED")
    assert again.json()["status"] == "ENABLED"


def test_enabling_records_each_transition_with_its_actor(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("solo"))

    assert set_status(client, tokens["operator"], "solo", "ENABLED").status_code == 200

    audit = client.get(f"{API}/audit", params={"target": "solo"}, headers=admin).json()
    moves = [
        (e["actor"], e["detail"]["from"], e["detail"]["to"])
        for e in reversed(audit["items"])
        if e["action"] == "module.status"
    ]
    assert moves == [
        ("operator", "REGISTERED", "INSTALLING"),
        ("operator", "INSTALLING", "DISABLED"),
        ("operator", "DISABLED", "ENABLED"),
    ]


def test_enable_with_a_dependency_not_enabled_is_409_with_the_reason(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("core-auth"))
    register(client, tokens["admin"], depends("app", {"core-auth": "^1.0.0"}))

    response = set_status(client, tokens["admin"], "app", "ENABLED")

    body = assert_problem(response, 409)
    assert "core-auth" in body["detail"]
    assert [u["dependency"] for u in body["unmet"]] == ["core-auth"]
    assert get(client, admin, "app")["status"] == "REGISTERED"
    assert get(client, admin, "core-auth")["status"] == "REGISTERED"


def test_enable_with_an_unregistered_dependency_is_409_even_with_cascade(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], depends("app", {"ghost": "^1.0.0"}))

    response = set_status(client, tokens["admin"], "app", "ENABLED", cascade="true")

    body = assert_problem(response, 409)
    assert "ghost" in body["detail"]
    assert "not registered" in body["detail"]
    assert get(client, admin, "app")["status"] == "REGISTERED"


def test_enable_with_a_dependency_outside_the_range_is_409(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("core-auth", "2.0.0"))
    assert set_status(client, tokens["admin"], "core-auth", "ENABLED").status_code == 200
    register(client, tokens["admin"], depends("app", {"core-auth": "^1.0.0"}))

    body = assert_problem(set_status(client, tokens["admin"], "app", "ENABLED"), 409)

    assert "2.0.0" in body["detail"]
    assert "^1.0.0" in body["detail"]


def test_enable_without_required_config_is_409(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("core-auth"))
    assert set_status(client, tokens["admin"], "core-auth", "ENABLED").status_code == 200
    register(client, tokens["admin"], vmware())

    body = assert_problem(set_status(client, tokens["admin"], "vmware-vcenter", "ENABLED"), 409)

    assert "vcenterHost" in body["detail"]
    configure_vmware(client, admin)
    assert set_status(client, tokens["admin"], "vmware-vcenter", "ENABLED").status_code == 200


def test_enable_with_cascade_enables_dependencies_in_order(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("middle", {"base": "^1.0.0"}))
    register(client, tokens["admin"], depends("top", {"middle": "^1.0.0"}))

    response = set_status(client, tokens["operator"], "top", "ENABLED", cascade="true")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ENABLED"
    for name in ("base", "middle", "top"):
        assert get(client, admin, name)["status"] == "ENABLED"
    audit = client.get(f"{API}/audit", params={"limit": 500}, headers=admin).json()
    enabled = [
        e["target"]
        for e in reversed(audit["items"])
        if e["action"] == "module.status" and e["detail"]["to"] == "ENABLED"
    ]
    assert enabled == ["base", "middle", "top"]


def test_disable_with_enabled_dependents_is_409_then_cascade(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))
    assert set_status(client, tokens["admin"], "app", "ENABLED", cascade="true").status_code == 200

    refused = set_status(client, tokens["operator"], "base", "DISABLED")

    body = assert_problem(refused, 409)
    assert body["dependents"] == ["app"]
    assert "app" in body["detail"]
    assert get(client, admin, "base")["status"] == "ENABLED"
    cascaded = set_status(client, tokens["operator"], "base", "DISABLED", cascade="true")
    assert cascaded.status_code == 200, cascaded.text
    assert get(client, admin, "base")["status"] == "DISABLED"
    assert get(client, admin, "app")["status"] == "DISABLED"


def test_status_dry_run_answers_the_plan_and_changes_nothing(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))
    audit_before = client.get(f"{API}/audit", headers=admin).json()["total"]

    response = set_status(client, tokens["admin"], "app", "ENABLED", cascade="true", dryRun="true")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "dryRun": True,
        "steps": [
            {"module": "base", "from": "REGISTERED", "to": "ENABLED"},
            {"module": "app", "from": "REGISTERED", "to": "ENABLED"},
        ],
    }
    assert get(client, admin, "base")["status"] == "REGISTERED"
    assert get(client, admin, "app")["status"] == "REGISTERED"
    assert client.get(f"{API}/audit", headers=admin).json()["total"] == audit_before


def test_disable_dry_run_lists_dependents_first(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))
    assert set_status(client, tokens["admin"], "app", "ENABLED", cascade="true").status_code == 200

    response = set_status(
        client, tokens["admin"], "base", "DISABLED", cascade="true", dryRun="true"
    )

    assert response.json()["steps"] == [
        {"module": "app", "from": "ENABLED", "to": "DISABLED"},
        {"module": "base", "from": "ENABLED", "to": "DISABLED"},
    ]
    assert get(client, admin, "base")["status"] == "ENABLED"


def test_dry_run_of_a_refused_change_is_the_same_409(
    client: TestClient, tokens: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))

    assert_problem(set_status(client, tokens["admin"], "app", "ENABLED", dryRun="true"), 409)


def test_status_body_must_be_enabled_or_disabled(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("solo"))
    bodies: list[dict[str, Any]] = [
        {"status": "REMOVING"},
        {"status": "REGISTERED"},
        {"status": "enabled"},
        {"status": 1},
        {"status": None},
        {},
        {"state": "ENABLED"},
    ]

    for body in bodies:
        response = client.put(f"{API}/modules/solo/status", json=body, headers=admin)
        assert error_paths(assert_problem(response, 422)) == ["/status"], body

    assert get(client, admin, "solo")["status"] == "REGISTERED"


def test_status_of_unknown_module_is_404(client: TestClient, tokens: dict[str, str]) -> None:
    assert_problem(set_status(client, tokens["admin"], "nobody", "ENABLED"), 404)


# -- PUT /modules/{name}/config -------------------------------------------------------------


@pytest.fixture
def vmware_registered(client: TestClient, tokens: dict[str, str]) -> None:
    register(client, tokens["admin"], manifest("core-auth"))
    register(client, tokens["admin"], vmware())


@pytest.mark.usefixtures("vmware_registered")
def test_config_update_answers_the_masked_config(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str], services: Services
) -> None:
    response = client.put(
        f"{API}/modules/vmware-vcenter/config",
        json={"config": VMWARE_CONFIG},
        headers=bearer(tokens["operator"]),
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"config": {**VMWARE_CONFIG, "vcenterPassword": MASK}}
    assert VMWARE_CONFIG["vcenterPassword"] not in response.text
    detail = client.get(f"{API}/modules/vmware-vcenter", headers=admin)
    assert detail.json()["config"]["vcenterPassword"] == MASK
    assert VMWARE_CONFIG["vcenterPassword"] not in detail.text
    assert services.registry.config_for_code("vmware-vcenter") == VMWARE_CONFIG
    with services.db.read() as session:
        stored = session.scalars(select(Module.config).where(Module.name == "vmware-vcenter")).one()
    assert VMWARE_CONFIG["vcenterPassword"] not in json.dumps(stored)


@pytest.mark.usefixtures("vmware_registered")
def test_config_mask_sent_back_keeps_the_secret(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    configure_vmware(client, admin)

    response = client.put(
        f"{API}/modules/vmware-vcenter/config",
        json={"config": {**VMWARE_CONFIG, "vcenterPassword": MASK, "vcenterHost": "vc2"}},
        headers=admin,
    )

    assert response.status_code == 200, response.text
    clear = services.registry.config_for_code("vmware-vcenter")
    assert clear["vcenterPassword"] == VMWARE_CONFIG["vcenterPassword"]
    assert clear["vcenterHost"] == "vc2"


@pytest.mark.usefixtures("vmware_registered")
def test_config_left_out_keys_take_their_defaults(
    client: TestClient, admin: dict[str, str]
) -> None:
    config = {k: v for k, v in VMWARE_CONFIG.items() if k != "syncInterval"}

    response = client.put(
        f"{API}/modules/vmware-vcenter/config", json={"config": config}, headers=admin
    )

    assert response.json()["config"]["syncInterval"] == 6


@pytest.mark.usefixtures("vmware_registered")
def test_config_422_lists_every_invalid_field(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    configure_vmware(client, admin)
    bad = {
        "vcenterHost": 42,
        "vcenterUsername": None,
        "syncInterval": 25,
        "colour": "blue",
    }

    response = client.put(
        f"{API}/modules/vmware-vcenter/config", json={"config": bad}, headers=admin
    )

    body = assert_problem(response, 422)
    assert sorted(error_paths(body)) == [
        "/config/colour",
        "/config/syncInterval",
        "/config/vcenterHost",
        "/config/vcenterUsername",
    ]
    assert services.registry.config_for_code("vmware-vcenter") == VMWARE_CONFIG


@pytest.mark.usefixtures("vmware_registered")
def test_config_must_be_an_object(client: TestClient, admin: dict[str, str]) -> None:
    for config in ([], "x", None, 3):
        response = client.put(
            f"{API}/modules/vmware-vcenter/config", json={"config": config}, headers=admin
        )
        assert error_paths(assert_problem(response, 422)) == ["/config"], config


def test_config_of_unknown_module_is_404(client: TestClient, admin: dict[str, str]) -> None:
    response = client.put(f"{API}/modules/nobody/config", json={"config": {}}, headers=admin)

    assert_problem(response, 404)


# -- DELETE /modules/{name} -------------------------------------------------------------------


def test_delete_answers_204_and_removes_every_version(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("gone"))
    register(client, tokens["admin"], manifest("gone", "2.0.0"))

    response = client.delete(f"{API}/modules/gone", headers=admin)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(f"{API}/modules/gone", headers=admin), 404)
    register(client, tokens["admin"], manifest("gone", "2.0.0"))
    assert [v["version"] for v in get(client, admin, "gone")["versions"]] == ["2.0.0"]


def test_delete_with_dependents_is_409_naming_them(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app-one", {"base": "^1.0.0"}))
    register(client, tokens["admin"], depends("app-two", {"base": "*"}))

    response = client.delete(f"{API}/modules/base", headers=admin)

    body = assert_problem(response, 409)
    assert body["dependents"] == ["app-one", "app-two"]
    assert "app-one" in body["detail"]
    assert "app-two" in body["detail"]
    assert get(client, admin, "base")["name"] == "base"


def test_deleting_the_dependent_drops_its_dependency_rows(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))

    assert client.delete(f"{API}/modules/app", headers=admin).status_code == 204

    assert get(client, admin, "base")["dependents"] == []
    assert client.delete(f"{API}/modules/base", headers=admin).status_code == 204


def test_delete_dry_run_answers_the_plan_and_keeps_the_module(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("keep"))

    response = client.delete(f"{API}/modules/keep", params={"dryRun": "true"}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "dryRun": True,
        "steps": [{"module": "keep", "from": "REGISTERED", "to": None}],
        "data": {"keys": 0, "bytes": 0, "kept": False},
    }
    assert get(client, admin, "keep")["status"] == "REGISTERED"


def test_delete_dry_run_with_dependents_is_409(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("base"))
    register(client, tokens["admin"], depends("app", {"base": "^1.0.0"}))

    response = client.delete(f"{API}/modules/base", params={"dryRun": "true"}, headers=admin)

    assert assert_problem(response, 409)["dependents"] == ["app"]


def test_delete_of_unknown_module_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(client.delete(f"{API}/modules/nobody", headers=admin), 404)


# -- POST /modules/validate -------------------------------------------------------------------


def test_validate_a_valid_manifest(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post(
        f"{API}/modules/validate", json={"manifest": vmware()}, headers=bearer(tokens["viewer"])
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"valid": True, "errors": [], "warnings": []}
    assert client.get(f"{API}/modules", headers=bearer(tokens["viewer"])).json()["total"] == 0


def test_validate_the_seeds_example_with_its_typescript_handler(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(f"{API}/modules/validate", json=SEED_TEST1, headers=admin)

    body = response.json()
    assert response.status_code == 200
    assert body == {"valid": True, "errors": [], "warnings": []}  # .ts runs in the Node worker


REDOS = {"type": "string", "validation": {"pattern": "^(a+)+$"}}
REDOS_INPUT = "a" * 64 + "!"  # about 2**64 steps for a backtracking engine: never ends


def test_a_viewer_cannot_freeze_the_server_with_a_pattern(
    client: TestClient, tokens: dict[str, str]
) -> None:
    data = manifest("redos", config={"schema": {"name": {**REDOS, "default": REDOS_INPUT}}})

    response = client.post(
        f"{API}/modules/validate", json={"manifest": data}, headers=bearer(tokens["viewer"])
    )

    assert response.status_code == 200, response.text
    assert error_paths(response.json()) == ["/config/schema/name/default"]


def test_a_config_value_is_matched_in_linear_time(
    client: TestClient, tokens: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("redos", config={"schema": {"name": REDOS}}))

    response = client.put(
        f"{API}/modules/redos/config",
        json={"config": {"name": REDOS_INPUT}},
        headers=bearer(tokens["operator"]),
    )

    problem = assert_problem(response, 422)
    assert [e["path"] for e in problem["errors"]] == ["/config/name"]
    assert "must match the pattern" in problem["errors"][0]["message"]


@pytest.mark.parametrize("endpoint", [modules.validate, modules.register, modules.set_config])
def test_manifest_and_config_checks_run_off_the_event_loop(endpoint: object) -> None:
    # Plain `def` endpoints run in the thread pool: a slow check never stalls /healthz.
    assert callable(endpoint)
    assert not inspect.iscoroutinefunction(endpoint)


def test_validate_an_invalid_manifest_is_200_with_errors(
    client: TestClient, admin: dict[str, str]
) -> None:
    bad = {
        "name": "X",
        "version": "one",
        "displayName": "",
        "config": {"schema": {"n": {"type": "number", "validation": {"min": 5, "max": 1}}}},
    }

    response = client.post(f"{API}/modules/validate", json={"manifest": bad}, headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"valid", "errors", "warnings"}
    assert body["valid"] is False
    paths = error_paths(body)
    assert {"/name", "/version", "/displayName"} <= set(paths)
    assert any(p.startswith("/config/schema/n") for p in paths)


def test_validate_needs_a_manifest_object(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(f"{API}/modules/validate", json={"manifest": [1]}, headers=admin)

    assert error_paths(assert_problem(response, 422)) == ["/manifest"]


# -- GET /schemas/manifest, /healthz, /audit ------------------------------------------------


def test_manifest_schema_is_a_json_schema_that_accepts_a_valid_manifest(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.get(f"{API}/schemas/manifest", headers=bearer(tokens["viewer"]))

    assert response.status_code == 200
    schema = response.json()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"name", "version", "displayName"} <= set(schema["required"])
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid(vmware())
    assert not validator.is_valid({"name": "x"})


def test_healthz_needs_no_token(client: TestClient, services: Services) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": services.db.dialect}


def test_audit_records_who_did_what_without_secrets(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("core-auth"))
    register(client, tokens["admin"], vmware())
    response = client.put(
        f"{API}/modules/vmware-vcenter/config",
        json={"config": VMWARE_CONFIG},
        headers=bearer(tokens["operator"]),
    )
    assert response.status_code == 200

    audit = client.get(f"{API}/audit", params={"target": "vmware-vcenter"}, headers=admin)

    assert audit.status_code == 200
    page = audit.json()
    assert set(page) == {"items", "total"}
    assert [(e["actor"], e["action"]) for e in page["items"]] == [
        ("operator", "module.config"),
        ("admin", "module.register"),
    ]
    assert page["total"] == 2
    assert page["items"][0]["detail"]["changed"] == sorted(VMWARE_CONFIG)
    assert all(set(e) == {"id", "at", "actor", "action", "target", "detail"} for e in page["items"])
    assert VMWARE_CONFIG["vcenterPassword"] not in audit.text


def test_audit_is_newest_first_and_pages(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    for letter in "abc":
        register(client, tokens["admin"], manifest(f"mod-{letter}"))

    everything = client.get(f"{API}/audit", headers=admin).json()
    page = client.get(f"{API}/audit", params={"limit": 2, "offset": 1}, headers=admin).json()

    ids = [e["id"] for e in everything["items"]]
    assert ids == sorted(ids, reverse=True)
    assert [e["target"] for e in everything["items"][:3]] == ["mod-c", "mod-b", "mod-a"]
    assert page["items"] == everything["items"][1:3]
    assert page["total"] == everything["total"]


# -- names that look like routes -------------------------------------------------------------


def test_modules_named_like_routes_are_served_as_modules(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    for name in ("schema", "validate", "schemas", "status", "config"):
        schema = {"level": {"type": "integer", "default": 1}}
        body = {**manifest(name), "config": {"schema": schema}}
        register(client, tokens["admin"], body)

        detail = get(client, admin, name)
        assert detail["name"] == name
        assert detail["manifest"] == body
        listed = client.get(f"{API}/modules", params={"q": name}, headers=admin).json()
        assert name in names(listed)
        config = client.put(
            f"{API}/modules/{name}/config", json={"config": {"level": 2}}, headers=admin
        )
        assert config.json() == {"config": {"level": 2}}
        assert set_status(client, tokens["admin"], name, "ENABLED").json()["status"] == "ENABLED"
        assert set_status(client, tokens["admin"], name, "DISABLED").json()["status"] == "DISABLED"
        assert client.delete(f"{API}/modules/{name}", headers=admin).status_code == 204
        assert_problem(client.get(f"{API}/modules/{name}", headers=admin), 404)

    schema_doc = client.get(f"{API}/schemas/manifest", headers=admin).json()
    assert "$schema" in schema_doc
    assert "properties" in schema_doc
