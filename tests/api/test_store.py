"""The operator's view of a module's store, its usage in the detail, and removal of its data
with the module, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.services import Services
from tests.api.conftest import API, assert_problem, error_paths, manifest, register
from tests.conftest import bearer

MB = 1024 * 1024
QUOTA = 64 * MB


def put(services: Services, module: str, key: str, value: Any, **kwargs: Any) -> int:
    return services.store.set(module, key, value, quota_bytes=QUOTA, **kwargs)


def size(key: str, value_json: str) -> int:
    return len(key.encode()) + len(value_json.encode())


@pytest.fixture
def stocked(client: TestClient, tokens: dict[str, str], services: Services) -> Services:
    """Register `vms` and `other`, each with keys of its own in the store."""
    register(client, tokens["admin"], manifest("vms"))
    register(client, tokens["admin"], manifest("other"))
    put(services, "vms", "vm/1", {"name": "web-01", "cpus": 2})
    put(services, "vms", "vm/2", {"name": "db-01"})
    put(services, "vms", "vm/2", {"name": "db-01", "cpus": 8})  # version 2
    put(services, "vms", "synced", "2026-12-05", ttl=3600)
    put(services, "other", "vm/1", "not yours")
    return services


# -- GET /modules/{name}/store ---------------------------------------------------------------


def test_list_answers_every_key_in_order_camel_case(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    response = client.get(f"{API}/modules/vms/store", headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cursor"] is None
    assert [(i["key"], i["version"]) for i in body["items"]] == [
        ("synced", 1),
        ("vm/1", 1),
        ("vm/2", 2),
    ]
    assert body["items"][2]["value"] == {"name": "db-01", "cpus": 8}
    assert set(body["items"][0]) == {"key", "value", "version", "expiresAt"}
    assert body["items"][0]["expiresAt"] is not None
    assert body["items"][1]["expiresAt"] is None


def test_list_filters_by_prefix_and_pages_with_the_cursor(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    first = client.get(
        f"{API}/modules/vms/store", params={"prefix": "vm/", "limit": 1}, headers=admin
    ).json()
    assert [i["key"] for i in first["items"]] == ["vm/1"]
    assert first["cursor"]

    second = client.get(
        f"{API}/modules/vms/store",
        params={"prefix": "vm/", "limit": 1, "cursor": first["cursor"]},
        headers=admin,
    ).json()
    assert [i["key"] for i in second["items"]] == ["vm/2"]
    assert second["cursor"] is None


def test_list_shows_only_the_named_modules_keys(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    body = client.get(f"{API}/modules/other/store", headers=admin).json()
    assert [(i["key"], i["value"]) for i in body["items"]] == [("vm/1", "not yours")]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "query:limit"),
        ({"limit": 1001}, "query:limit"),
        ({"limit": "many"}, "query:limit"),
        ({"cursor": "not-a-cursor!"}, "query:cursor"),
        ({"cursor": ""}, "query:cursor"),
        ({"prefix": "a\x00b"}, "query:prefix"),
    ],
)
def test_a_bad_query_is_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    stocked: Services,
    params: dict[str, Any],
    path: str,
) -> None:
    response = client.get(f"{API}/modules/vms/store", params=params, headers=admin)
    assert error_paths(assert_problem(response, 422)) == [path]


# -- GET and DELETE /modules/{name}/store/{key} ------------------------------------------------


def test_get_answers_a_key_with_a_slash_in_it(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    response = client.get(f"{API}/modules/vms/store/vm/2", headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "key": "vm/2",
        "value": {"name": "db-01", "cpus": 8},
        "version": 2,
        "expiresAt": None,
    }


def test_a_key_sent_percent_encoded_is_the_same_key(
    client: TestClient, admin: dict[str, str], services: Services, stocked: Services
) -> None:
    put(services, "vms", "a key?#%/x", 1)
    response = client.get(f"{API}/modules/vms/store/a%20key%3F%23%25%2Fx", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["key"] == "a key?#%/x"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_absent_key_or_module_is_404(
    client: TestClient, admin: dict[str, str], stocked: Services, method: str
) -> None:
    assert_problem(client.request(method, f"{API}/modules/vms/store/vm/9", headers=admin), 404)
    assert_problem(client.request(method, f"{API}/modules/nobody/store/vm/1", headers=admin), 404)
    assert_problem(client.request(method, f"{API}/modules/vms/store/vm", headers=admin), 404)


def test_listing_an_unknown_module_is_404(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    assert_problem(client.get(f"{API}/modules/nobody/store", headers=admin), 404)


def test_a_key_too_long_is_422_naming_the_key(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    response = client.get(f"{API}/modules/vms/store/{'k' * 513}", headers=admin)
    assert error_paths(assert_problem(response, 422)) == ["path:key"]


def test_an_expired_key_is_not_found(
    client: TestClient, admin: dict[str, str], services: Services, stocked: Services
) -> None:
    later = services.store.clock() + timedelta(hours=2)
    services.store.clock = lambda: later
    assert_problem(client.get(f"{API}/modules/vms/store/synced", headers=admin), 404)
    keys = [i["key"] for i in client.get(f"{API}/modules/vms/store", headers=admin).json()["items"]]
    assert keys == ["vm/1", "vm/2"]


def test_delete_removes_only_that_key_of_that_module(
    client: TestClient, admin: dict[str, str], services: Services, stocked: Services
) -> None:
    response = client.delete(f"{API}/modules/vms/store/vm/1", headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True}
    assert services.store.get_entry("vms", "vm/1") is None
    assert services.store.get_entry("vms", "vm/2") is not None
    assert services.store.get_entry("other", "vm/1") is not None
    assert_problem(client.delete(f"{API}/modules/vms/store/vm/1", headers=admin), 404)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_sees_or_deletes_stored_data(
    client: TestClient, tokens: dict[str, str], services: Services, stocked: Services, role: str
) -> None:
    headers = bearer(tokens[role])
    for method, path in (
        ("GET", f"{API}/modules/vms/store"),
        ("GET", f"{API}/modules/vms/store/vm/1"),
        ("DELETE", f"{API}/modules/vms/store/vm/1"),
    ):
        response = client.request(method, path, headers=headers)
        assert assert_problem(response, 403)["permission"] == "modules:admin"
        assert "web-01" not in response.text
    assert services.store.get_entry("vms", "vm/1") is not None


# -- the module detail -----------------------------------------------------------------------


def test_the_detail_shows_the_stores_usage_and_limit(
    client: TestClient, admin: dict[str, str], stocked: Services
) -> None:
    storage = client.get(f"{API}/modules/vms", headers=admin).json()["storage"]

    expected = (
        size("vm/1", '{"name":"web-01","cpus":2}')
        + size("vm/2", '{"name":"db-01","cpus":8}')
        + size("synced", '"2026-12-05"')
    )
    assert storage == {"keys": 3, "bytes": expected, "limitBytes": 64 * MB}


def test_the_detail_of_a_module_without_data_shows_zero(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str]
) -> None:
    register(client, tokens["admin"], manifest("empty", runtime={"storageMb": 2}))
    storage = client.get(f"{API}/modules/empty", headers=admin).json()["storage"]
    assert storage == {"keys": 0, "bytes": 0, "limitBytes": 2 * MB}


def test_the_detail_limit_is_capped_by_the_operators_ceiling(
    client: TestClient, tokens: dict[str, str], admin: dict[str, str], services: Services
) -> None:
    register(client, tokens["admin"], manifest("greedy", runtime={"storageMb": 4096}))
    assert services.settings.max_module_storage_mb == 1024
    storage = client.get(f"{API}/modules/greedy", headers=admin).json()["storage"]
    assert storage["limitBytes"] == 1024 * MB


# -- DELETE /modules/{name} and the module's data ----------------------------------------------


def test_removing_a_module_deletes_its_data_and_nobody_elses(
    client: TestClient,
    tokens: dict[str, str],
    admin: dict[str, str],
    services: Services,
    stocked: Services,
) -> None:
    assert client.delete(f"{API}/modules/vms", headers=admin).status_code == 204

    assert services.store.usage("vms").keys == 0
    assert services.store.list("vms").items == []
    assert services.store.get_entry("other", "vm/1") is not None
    register(client, tokens["admin"], manifest("vms"))  # a new module of that name starts empty
    assert client.get(f"{API}/modules/vms", headers=admin).json()["storage"]["keys"] == 0


def test_keep_data_keeps_it_for_the_next_install(
    client: TestClient,
    tokens: dict[str, str],
    admin: dict[str, str],
    services: Services,
    stocked: Services,
) -> None:
    response = client.delete(f"{API}/modules/vms", params={"keepData": "true"}, headers=admin)
    assert response.status_code == 204, response.text

    assert_problem(client.get(f"{API}/modules/vms", headers=admin), 404)
    register(client, tokens["admin"], manifest("vms"))
    assert client.get(f"{API}/modules/vms/store/vm/2", headers=admin).json()["version"] == 2


@pytest.mark.parametrize("keep", [False, True])
def test_the_dry_run_plan_says_what_data_would_go(
    client: TestClient, admin: dict[str, str], services: Services, stocked: Services, keep: bool
) -> None:
    before = services.store.usage("vms")
    response = client.delete(
        f"{API}/modules/vms",
        params={"dryRun": "true", "keepData": str(keep).lower()},
        headers=admin,
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"keys": 3, "bytes": before.bytes, "kept": keep}
    assert services.store.usage("vms") == before
    assert client.get(f"{API}/modules/vms", headers=admin).status_code == 200


def test_a_refused_removal_leaves_the_data(
    client: TestClient,
    tokens: dict[str, str],
    admin: dict[str, str],
    services: Services,
    stocked: Services,
) -> None:
    register(client, tokens["admin"], manifest("app", dependencies={"modules": {"vms": "^1.0.0"}}))
    assert_problem(client.delete(f"{API}/modules/vms", headers=admin), 409)
    assert services.store.usage("vms").keys == 3
