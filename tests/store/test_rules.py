"""The store's rules at their edges, on SQLite and PostgreSQL: what expires, what the quota
counts, which inputs are refused (each with a clear error, nothing changed) and how a list
pages."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import update

from modhub.db import Database
from modhub.db.models import StoreUsage
from modhub.errors import ModhubError
from modhub.store import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    InvalidKey,
    InvalidValue,
    ModuleStore,
    QuotaExceeded,
    StoreError,
    Usage,
    ValueTooLarge,
    VersionConflict,
)
from tests.store.conftest import QUOTA, Clock


def keys_of(store: ModuleStore, module: str, prefix: str = "", limit: int = 100) -> list[str]:
    """Every key of a listing, followed page by page."""
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list(module, prefix, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        seen += [entry.key for entry in page.items]
        if page.cursor is None:
            return seen
        cursor = page.cursor


# -- expiry -----------------------------------------------------------------------------------


def test_usage_leaves_out_expired_keys_at_once(store: ModuleStore, clock: Clock) -> None:
    store.set("a", "kept", 1, quota_bytes=QUOTA)  # 4 + 1 bytes
    store.set("a", "gone", 22, ttl=10, quota_bytes=QUOTA)  # 4 + 2 bytes
    assert store.usage("a") == Usage(2, 11)
    clock.now += timedelta(seconds=10)  # expires_at == now: expired
    assert store.usage("a") == Usage(1, 5)
    assert store.purge_expired() == 1
    assert store.usage("a") == Usage(1, 5)


def test_set_without_ttl_clears_it_and_incr_keeps_it(store: ModuleStore, clock: Clock) -> None:
    store.set("a", "k", 1, ttl=5, quota_bytes=QUOTA)
    store.set("a", "k", 2, quota_bytes=QUOTA)
    clock.now += timedelta(days=1)
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert (entry.value, entry.expires_at) == (2, None)
    store.set("a", "n", 5, ttl=60, quota_bytes=QUOTA)
    assert store.incr("a", "n", quota_bytes=QUOTA) == 6
    entry = store.get_entry("a", "n")
    assert entry is not None
    assert entry.expires_at == clock.now + timedelta(seconds=60)
    clock.now += timedelta(seconds=60)
    assert store.incr("a", "n", 3, quota_bytes=QUOTA) == 3  # expired: starts from 0 ...
    entry = store.get_entry("a", "n")
    assert entry is not None
    assert (entry.version, entry.expires_at) == (1, None)


def test_an_expired_key_is_absent_to_if_version_and_delete(
    store: ModuleStore, clock: Clock
) -> None:
    store.set("a", "k", "v", ttl=1, quota_bytes=QUOTA)
    clock.now += timedelta(seconds=1)
    with pytest.raises(VersionConflict, match="absent"):
        store.set("a", "k", "w", if_version=1, quota_bytes=QUOTA)
    assert store.delete("a", "k", if_version=0) is False  # it was there, but expired
    assert store.usage("a") == Usage(0, 0)
    assert store.purge_expired() == 0


def test_purge_covers_every_module_and_keeps_live_keys(store: ModuleStore, clock: Clock) -> None:
    for module in ("a", "b", "c"):
        store.set(module, "old", 1, ttl=5, quota_bytes=QUOTA)
        store.set(module, "new", 1, ttl=50, quota_bytes=QUOTA)
        store.set(module, "forever", 1, quota_bytes=QUOTA)
    clock.now += timedelta(seconds=6)
    assert store.purge_expired() == 3
    assert store.purge_expired() == 0
    for module in ("a", "b", "c"):
        assert keys_of(store, module) == ["forever", "new"]
        assert store.usage(module) == Usage(2, 12)


# -- quota ------------------------------------------------------------------------------------


def test_a_write_exactly_at_the_limit_passes_one_byte_more_fails(store: ModuleStore) -> None:
    store.set("a", "k", "x" * 8, quota_bytes=11)  # 1 + 10 bytes: exactly the limit
    with pytest.raises(QuotaExceeded) as over:
        store.set("a", "j", 1, quota_bytes=12)  # 11 + 2
    assert "limit of 12 bytes (0.00 MB)" in over.value.detail
    assert "holds 11 bytes" in over.value.detail
    with pytest.raises(QuotaExceeded):
        store.incr("a", "j", quota_bytes=12)
    with pytest.raises(QuotaExceeded):
        store.set("a", "k", "x" * 9, quota_bytes=11)  # replacing counts the difference
    assert store.usage("a") == Usage(1, 11)
    assert store.get_entry("a", "j") is None


def test_expired_keys_do_not_count_toward_the_quota(store: ModuleStore, clock: Clock) -> None:
    store.set("a", "tmp", "x" * 90, ttl=1, quota_bytes=100)  # 3 + 92 bytes
    clock.now += timedelta(seconds=1)
    assert store.set("a", "k", "y" * 90, quota_bytes=100) == 1  # 1 + 92: fits once tmp is gone
    assert store.usage("a") == Usage(1, 93)
    assert store.purge_expired() == 0  # the write already removed it


def test_rewriting_an_expired_key_counts_as_a_new_one(store: ModuleStore, clock: Clock) -> None:
    store.set("a", "big", "x" * 90, ttl=1, quota_bytes=200)  # 3 + 92
    store.set("a", "live", "y" * 90, quota_bytes=200)  # 4 + 92
    clock.now += timedelta(seconds=1)
    with pytest.raises(QuotaExceeded, match="holds 96 bytes"):
        store.set("a", "big", "z" * 10, quota_bytes=100)  # smaller than the expired value
    assert store.usage("a") == Usage(1, 96)
    assert store.get_entry("a", "big") is None


def test_a_big_value_can_be_replaced_by_a_small_one_when_over(store: ModuleStore) -> None:
    store.set("a", "big", "x" * 1000, quota_bytes=QUOTA)
    store.set("a", "other", 1, quota_bytes=QUOTA)
    assert store.set("a", "big", "x" * 500, quota_bytes=100) == 2  # still over, but less
    assert store.usage("a") == Usage(2, 3 + 502 + 6)
    with pytest.raises(QuotaExceeded):
        store.set("a", "new", 1, quota_bytes=100)
    assert store.delete("a", "big") is True  # deleting is always allowed


def test_usage_may_pass_2_gib(db: Database, store: ModuleStore) -> None:
    store.set("a", "k", 1, quota_bytes=QUOTA)
    with db.write() as session:  # as if 3 GiB were stored (a quota of 65,536 MB allows it)
        session.execute(update(StoreUsage).values(bytes=3 * 1024**3))
    store.set("a", "j", 1, quota_bytes=4 * 1024**3)
    assert store.usage("a") == Usage(2, 3 * 1024**3 + 2)
    with pytest.raises(QuotaExceeded, match=r"3072\.00 MB"):
        store.set("a", "x", 1, quota_bytes=3 * 1024**3)


# -- refused input ----------------------------------------------------------------------------


def test_the_errors_are_store_errors_with_their_statuses() -> None:
    statuses = {
        StoreError: 422,
        VersionConflict: 409,
        QuotaExceeded: 507,
        ValueTooLarge: 413,
        InvalidKey: 422,
        InvalidValue: 422,
    }
    for error, status in statuses.items():
        assert issubclass(error, StoreError)
        assert issubclass(error, ModhubError)
        assert error.status == status


def test_version_conflict_names_key_expected_and_current(store: ModuleStore) -> None:
    store.set("a", "k", 1, quota_bytes=QUOTA)
    store.set("a", "k", 2, quota_bytes=QUOTA)
    with pytest.raises(VersionConflict, match="'k' is at version 2, not at the expected version 1"):
        store.set("a", "k", 3, if_version=1, quota_bytes=QUOTA)
    with pytest.raises(VersionConflict, match=r"'k' is at version 2, not .* version 3"):
        store.delete("a", "k", if_version=3)
    for bad in (-1, True, 1.0, "1"):
        with pytest.raises(InvalidValue, match="if_version"):
            store.set("a", "k", 3, if_version=bad, quota_bytes=QUOTA)  # type: ignore[arg-type]
        with pytest.raises(InvalidValue, match="if_version"):
            store.delete("a", "k", if_version=bad)  # type: ignore[arg-type]
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert (entry.value, entry.version) == (2, 2)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "non-empty"),
        (None, "non-empty string"),
        (b"k", "non-empty string"),
        ("k" * (MAX_KEY_BYTES + 1), "at most 512 bytes"),
        ("é" * 256 + "a", "at most 512 bytes"),  # 513 bytes in 257 characters
        ("a\udc80b", "lone surrogate"),
        ("a\x00b", "NUL"),
    ],
)
def test_bad_keys_are_refused_by_every_method(store: ModuleStore, key: object, reason: str) -> None:
    calls = [
        lambda: store.set("a", key, 1, quota_bytes=QUOTA),  # type: ignore[arg-type]
        lambda: store.get_entry("a", key),  # type: ignore[arg-type]
        lambda: store.delete("a", key),  # type: ignore[arg-type]
        lambda: store.incr("a", key, quota_bytes=QUOTA),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidKey, match=reason):
            call()
    assert store.usage("a") == Usage(0, 0)


def test_the_longest_key_and_the_largest_value_fit(store: ModuleStore) -> None:
    key = "é" * (MAX_KEY_BYTES // 2)
    value = "x" * (MAX_VALUE_BYTES - 2)  # with its quotes: exactly the largest
    assert store.set("a", key, value, quota_bytes=QUOTA) == 1
    with pytest.raises(ValueTooLarge, match=f"{MAX_VALUE_BYTES + 1} bytes"):
        store.set("a", key, value + "x", quota_bytes=QUOTA)
    with pytest.raises(ValueTooLarge):  # counted in UTF-8 bytes, not characters
        store.set("a", key, "é" * (MAX_VALUE_BYTES // 2), quota_bytes=QUOTA)
    entry = store.get_entry("a", key)
    assert entry is not None
    assert (entry.value, entry.version) == (value, 1)


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("inf"), "not JSON"),
        ({1: object()}, "not JSON"),
        (b"bytes", "not JSON"),
        ("a\ud800", "not JSON"),  # a lone surrogate has no UTF-8
        (nested(100_000), "not JSON"),  # deeper than the encoder goes
        (10**5000, "not JSON"),  # past Python's integer digits limit
    ],
    ids=["inf", "object", "bytes", "surrogate", "deep", "digits"],
)
def test_bad_values_are_refused(store: ModuleStore, value: object, reason: str) -> None:
    store.set("a", "k", "kept", quota_bytes=QUOTA)
    with pytest.raises(InvalidValue, match=reason):
        store.set("a", "k", value, quota_bytes=QUOTA)
    entry = store.get_entry("a", "k")
    assert entry is not None
    assert (entry.value, entry.version) == ("kept", 1)


@pytest.mark.parametrize("ttl", [0, -1, True, "5", float("nan"), float("inf"), 1e300])
def test_bad_ttls_are_refused(store: ModuleStore, ttl: object) -> None:
    with pytest.raises(InvalidValue, match="ttl"):
        store.set("a", "k", 1, ttl=ttl, quota_bytes=QUOTA)  # type: ignore[arg-type]
    assert store.get_entry("a", "k") is None


def test_incr_refuses_what_it_cannot_add(store: ModuleStore) -> None:
    for value in ("1", 1.5, True, None, [1]):
        store.set("a", "k", value, quota_bytes=QUOTA)
        with pytest.raises(InvalidValue, match="'k' does not hold a whole number"):
            store.incr("a", "k", quota_bytes=QUOTA)
    for by in (1.5, True, "1"):
        with pytest.raises(InvalidValue, match="by"):
            store.incr("a", "n", by, quota_bytes=QUOTA)  # type: ignore[arg-type]
    store.set("a", "n", 10**4299, quota_bytes=QUOTA)  # the most digits JSON here takes
    with pytest.raises(InvalidValue, match="not JSON"):
        store.incr("a", "n", 9 * 10**4299, quota_bytes=QUOTA)
    assert store.incr("a", "n", -(10**4299), quota_bytes=QUOTA) == 0
    assert store.incr("a", "n", -5, quota_bytes=QUOTA) == -5


# -- listing ----------------------------------------------------------------------------------


def test_list_is_in_byte_order_with_case_and_non_ascii(store: ModuleStore) -> None:
    keys = ["b", "B", "a", "é", "É", "e", "ø", "z", "Z", "日本", "😀", "\uffff", "a b", "a-b"]
    for key in keys:
        store.set("m", key, key, quota_bytes=QUOTA)
    in_order = sorted(keys, key=str.encode)
    for limit in (1, 2, 5, 100):
        assert keys_of(store, "m", limit=limit) == in_order


def test_prefixes_are_literal_and_page_with_a_cursor(store: ModuleStore) -> None:
    keys = ["a", "a%", "a%b", "a_", "a_b", "ab", "aB", "A", "a/", "a\\", "b", "\U0010ffff"]
    keys += [f"vm/{i:03}" for i in range(25)] + ["vm0", "vm.", "VM/1", "vn/"]
    keys += ["\ud7ffx", "\ud7ff", "\ue000", "\U0010ffff\U0010ffff", "\U0010ffffa"]
    for key in keys:
        store.set("m", key, 1, quota_bytes=QUOTA)
    store.set("other", "vm/999", 1, quota_bytes=QUOTA)
    for prefix in ("a", "a%", "a_", "a\\", "A", "vm/", "vm", "\ud7ff", "\U0010ffff", "zz"):
        expected = sorted((k for k in keys if k.startswith(prefix)), key=str.encode)
        for limit in (1, 3, 1000):
            assert keys_of(store, "m", prefix, limit) == expected, (prefix, limit)
    # a cursor from outside the prefix's range
    page = store.list("m", limit=1)
    assert [e.key for e in store.list("m", "vm/", limit=2, cursor=page.cursor).items] == [
        "vm/000",
        "vm/001",
    ]
    last = store.list("m", "b", limit=1000)
    assert last.cursor is None
    after_all = base64.urlsafe_b64encode("\U0010ffff\U0010ffff".encode()).decode()
    assert store.list("m", "vm/", cursor=after_all).items == []


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "YQ",  # "a" without its padding
        "YQ==\n",
        "%%%not-base64",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        base64.urlsafe_b64encode(b"k" * 513).decode(),  # no key is that long
        123,
        ["YQ=="],
    ],
)
def test_a_cursor_the_store_did_not_give_is_refused(store: ModuleStore, cursor: object) -> None:
    store.set("m", "a", 1, quota_bytes=QUOTA)
    with pytest.raises(InvalidValue, match="cursor"):
        store.list("m", cursor=cursor)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"prefix": 5}, "prefix"),
        ({"prefix": "a\x00"}, "prefix"),
        ({"prefix": "\udc80"}, "prefix"),
    ],
)
def test_bad_list_arguments_are_refused(
    store: ModuleStore, arguments: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidValue, match=field):
        store.list("m", **arguments)  # type: ignore[arg-type]


# -- drop -------------------------------------------------------------------------------------


def test_drop_returns_the_live_keys_and_bytes(store: ModuleStore, clock: Clock) -> None:
    assert store.drop("nobody") == Usage(0, 0)
    store.set("a", "k", 1, quota_bytes=QUOTA)
    store.set("a", "t", 1, ttl=1, quota_bytes=QUOTA)
    store.set("b", "k", 1, quota_bytes=QUOTA)
    clock.now += timedelta(seconds=1)
    assert store.drop("a") == Usage(1, 2)
    assert store.usage("a") == Usage(0, 0)
    assert store.purge_expired() == 0  # the expired key went too
    assert store.set("a", "k", 2, if_version=0, quota_bytes=QUOTA) == 1  # starts over
    assert keys_of(store, "b") == ["k"]
