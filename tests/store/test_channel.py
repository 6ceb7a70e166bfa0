"""The store as a module service: the module is the channel's, whatever the call says, and
every malformed argument is a store error (the worker re-raises it), never a crash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modhub.sandbox.channel import CallerContext
from modhub.store import InvalidKey, InvalidValue, ModuleStore, QuotaExceeded, StoreError
from modhub.store.channel import StoreService


def caller(module: str = "mine", version: str = "1.0.0") -> CallerContext:
    return CallerContext(module=module, version=version, user=None, job="j", deadline=0.0)


@pytest.fixture
def quotas() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def service(store: ModuleStore, quotas: list[tuple[str, str]]) -> StoreService:
    def quota(module: str, version: str) -> int:
        quotas.append((module, version))
        return 1000

    return StoreService(store, quota)


def call(service: StoreService, op: str, args: dict[str, Any], who: str = "mine") -> Any:
    return asyncio.run(service.handle(caller(who), op, args))


def test_the_module_is_the_callers_never_the_calls(
    service: StoreService, store: ModuleStore, quotas: list[tuple[str, str]]
) -> None:
    store.set("other", "secret", "theirs", quota_bytes=1000)
    forged = {"key": "secret", "module": "other", "value": "mine", "prefix": ""}
    assert call(service, "get_entry", forged) is None
    assert call(service, "list", forged) == {"items": [], "cursor": None}
    assert call(service, "set", forged) == 1
    assert call(service, "incr", {"key": "n", "module": "other"}) == 1
    assert call(service, "delete", forged) is True
    assert quotas == [("mine", "1.0.0")] * 2
    entry = store.get_entry("other", "secret")
    assert entry is not None
    assert (entry.value, entry.version) == ("theirs", 1)
    assert store.get_entry("other", "n") is None


def test_results_are_json_for_the_worker(service: StoreService) -> None:
    assert call(service, "set", {"key": "k", "value": {"a": [1]}, "ttl": 30}) == 1
    entry = call(service, "get_entry", {"key": "k"})
    assert entry["value"] == {"a": [1]}
    assert entry["version"] == 1
    assert entry["expiresAt"].endswith("+00:00")
    page = call(service, "list", {"prefix": "k", "limit": 1})
    assert [item["key"] for item in page["items"]] == ["k"]
    assert page["cursor"] is None
    with pytest.raises(QuotaExceeded):
        call(service, "set", {"key": "big", "value": "x" * 1000})


@pytest.mark.parametrize(
    ("op", "args", "error", "field"),
    [
        ("drop", {}, InvalidValue, "no operation 'drop'"),
        ("purge_expired", {}, InvalidValue, "no operation"),
        ("__init__", {}, InvalidValue, "no operation"),
        ("get_entry", {}, InvalidKey, "non-empty string"),
        ("set", {"key": "k", "value": 1, "ttl": 10**400}, InvalidValue, "ttl"),
        ("set", {"key": "k", "value": 1, "ttl": "5"}, InvalidValue, "ttl"),
        ("set", {"key": "k", "value": 1, "ifVersion": "0"}, InvalidValue, "ifVersion"),
        ("delete", {"key": "k", "ifVersion": 1.5}, InvalidValue, "ifVersion"),
        ("incr", {"key": "k", "by": "2"}, InvalidValue, "by"),
        ("list", {"limit": 0}, InvalidValue, "limit"),
        ("list", {"limit": 1.5}, InvalidValue, "limit"),
        ("list", {"prefix": 1}, InvalidValue, "prefix"),
        ("list", {"cursor": 1}, InvalidValue, "cursor"),
        ("list", {"cursor": "Zm8"}, InvalidValue, "cursor"),  # "fo", but unpadded
    ],
)
def test_malformed_calls_are_store_errors(
    service: StoreService, op: str, args: dict[str, Any], error: type[StoreError], field: str
) -> None:
    with pytest.raises(error, match=field):
        call(service, op, args)
