"""The registry's read cache (the API's module list pages and details as JSON): every kind
of change is served at once on the node that made it, a change made through another
node is served once that node's notification or fingerprint poll comes, and an answer
read before a change is never kept after it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient
from sqlalchemy import event

from modhub.db import Database
from modhub.keys import SecretBox
from modhub.lifecycle.service import quota_bytes
from modhub.registry import Registry, Status
from modhub.registry.cache import ReadCache, encode, to_json
from modhub.registry.types import ModuleView, StorageUsage
from modhub.services import Services
from tests.conftest import PASSWORD, SECRET, bearer, start_server, stop_server
from tests.jobs.conftest import wait_for
from tests.registry.helpers import ACTOR, manifest

API = "/api/v1"
SECRET_FIELD = {"token": {"type": "string", "sensitive": True}}


def page(registry: Registry, **query: Any) -> dict[str, Any]:
    """Return a list page as the API serves it (through the cache)."""
    found: dict[str, Any] = json.loads(registry.list_json(**query))
    return found


def listed(registry: Registry, name: str) -> dict[str, Any]:
    """Return the list item of module `name` (through the cache)."""
    return next(item for item in page(registry)["items"] if item["name"] == name)


@pytest.fixture
def registry(services: Services) -> Registry:
    registry = services.registry
    registry.register(manifest("dns", config=SECRET_FIELD), actor=ACTOR)
    registry.register(manifest("web", deps={"dns": "^1.0.0"}), actor=ACTOR)
    return registry


@pytest.fixture
def api(client: TestClient, tokens: dict[str, str]) -> Callable[[str], Any]:
    """Return a GET of the API as admin, its JSON."""

    def get(path: str) -> Any:
        answer = client.get(API + path, headers=bearer(tokens["admin"]))
        assert answer.status_code == 200, answer.text
        return answer.json()

    return get


def test_answers_are_cached_until_a_change(registry: Registry) -> None:
    first = registry.list_json()
    assert registry.cached(registry.list_key(None, None, 50, 0)) == (first,)
    assert registry.list_json() is first  # served from the cache: the same bytes object
    registry.set_status("dns", Status.ENABLED, actor=ACTOR)
    assert registry.cached(registry.list_key(None, None, 50, 0)) is None
    assert listed(registry, "dns")["status"] == "ENABLED"


def test_a_lists_order_is_read_once_per_filter_until_a_change(registry: Registry) -> None:
    """A list's matching ids, by name, are read once per filter; each page then reads only
    its own rows, and the total is their number."""
    orders: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT modules.id") and "ORDER BY modules.name" in statement:
            orders.append(statement)

    event.listen(registry.db.engine, "before_cursor_execute", spy)
    try:
        pages = [page(registry, limit=1, offset=n) for n in (0, 1, 2)]
        assert [[i["name"] for i in p["items"]] for p in pages] == [["dns"], ["web"], []]
        assert [p["total"] for p in pages] == [2, 2, 2]
        assert page(registry, limit=1, status=Status.ENABLED)["total"] == 0
        assert len(orders) == 2  # one per filter: the later pages sliced the first's
        registry.set_status("dns", Status.ENABLED, actor=ACTOR)
        assert page(registry, limit=1, offset=1)["total"] == 2
        enabled = page(registry, limit=1, status=Status.ENABLED)
        assert (enabled["total"], enabled["items"][0]["name"]) == (1, "dns")
        assert len(orders) == 4  # read again after the change
    finally:
        event.remove(registry.db.engine, "before_cursor_execute", spy)


def test_every_kind_of_change_is_served_at_once_here(
    registry: Registry, api: Callable[[str], Any]
) -> None:
    assert api("/modules/dns")["status"] == "REGISTERED"
    assert api("/modules")["total"] == 2
    registry.set_status("dns", Status.ENABLED, actor=ACTOR)
    assert api("/modules/dns")["status"] == "ENABLED"
    assert api("/modules/web")["dependencies"][0]["status"] == "ENABLED"  # another's row
    assert api("/modules?status=ENABLED")["total"] == 1

    registry.set_config("dns", {"token": "s3cret"}, actor=ACTOR)
    assert api("/modules/dns")["config"] == {"token": "********"}

    registry.register(manifest("dns", "1.1.0", config=SECRET_FIELD), actor=ACTOR)
    assert [v["version"] for v in api("/modules/dns")["versions"]] == ["1.1.0", "1.0.0"]

    registry.record_error("dns", "it broke")
    assert api("/modules/dns")["lastError"] == "it broke"
    assert api("/modules?q=dns")["items"][0]["lastError"] == "it broke"

    registry.register(manifest("zone", deps={"dns": "^1.0.0"}), actor=ACTOR)
    assert [d["name"] for d in api("/modules/dns")["dependents"]] == ["web", "zone"]
    assert api("/modules")["total"] == 3
    registry.delete("zone", actor=ACTOR)
    assert api("/modules")["total"] == 2


def test_the_api_answers_the_bytes_its_response_models_render(
    client: TestClient, tokens: dict[str, str], services: Services, registry: Registry
) -> None:
    """The cached JSON is exactly what FastAPI rendered from ModulePage and ModuleView."""
    text = 'Zo\u00eb \u2028 \u00e9t\u00e9 \U0001f600 \\ " </'
    registry.register(manifest("zoe", runtime={"storageMb": 3}, description=text), actor=ACTOR)
    registry.set_config("dns", {"token": "s3cret"}, actor=ACTOR)
    for _ in range(2):  # read, then served from the cache
        for name in ("zoe", "dns", "web"):
            answer = client.get(f"{API}/modules/{name}", headers=bearer(tokens["admin"]))
            limit = quota_bytes(3 if name == "zoe" else None, services.settings)
            view = ModuleView(
                **dict(registry.get(name)), storage=StorageUsage(keys=0, bytes=0, limit_bytes=limit)
            )
            assert answer.content == encode(jsonable_encoder(view))
            assert answer.headers["content-type"] == "application/json"
        for query in ({}, {"limit": 1, "offset": 1}, {"q": "zo"}, {"status": "REGISTERED"}):
            answer = client.get(f"{API}/modules", params=query, headers=bearer(tokens["admin"]))
            expected = registry.list_modules(**query)  # type: ignore[arg-type]
            assert answer.content == encode(jsonable_encoder(expected))


def test_the_store_use_of_a_cached_detail_is_read_each_time(
    services: Services, registry: Registry, api: Callable[[str], Any]
) -> None:
    assert api("/modules/dns")["storage"]["keys"] == 0
    services.store.set("dns", "k", {"v": 1}, quota_bytes=1 << 20)
    storage = api("/modules/dns")["storage"]
    assert (storage["keys"], storage["bytes"]) == (1, len("k") + len('{"v":1}'))


def test_a_read_that_began_before_a_change_is_not_kept(registry: Registry) -> None:
    def read_while_changed() -> tuple[bytes, ...]:
        answer = (registry.list_json(limit=1),)  # the old rows
        registry.set_status("dns", Status.ENABLED, actor=ACTOR)  # commits meanwhile
        return answer

    stale = registry.read_cached(("probe",), read_while_changed)
    assert json.loads(stale[0])["items"][0]["status"] == "REGISTERED"
    assert registry.cached(("probe",)) is None  # not kept: the next read sees the change


@pytest.fixture
def other_node(services: Services) -> Iterator[Registry]:
    """Yield the registry of another node on the same database (its own connections)."""
    db = Database(services.settings.db_url)
    yield Registry(db, SecretBox(SECRET))
    db.dispose()


def test_another_nodes_change_is_served_once_the_poll_sees_it(
    registry: Registry, other_node: Registry
) -> None:
    other_node.fingerprint()  # the poll's first look

    def detail() -> bytes:  # what the API's detail of `dns` caches, on the other node
        return other_node.read_cached(("dns",), lambda: (to_json(other_node.get("dns")),))[0]

    for change in (
        lambda: registry.set_status("dns", Status.ENABLED, actor=ACTOR),
        lambda: registry.register(manifest("dns", "1.1.0"), actor=ACTOR),  # a new version
        lambda: registry.record_error("dns", "it broke"),
        lambda: registry.delete("web", actor=ACTOR),  # a dependent goes
    ):
        before = detail()
        change()
        assert detail() is before  # not told yet: the cached answer
        other_node.fingerprint()  # the poll (every second) finds the registry moved
        assert detail() != before
    assert listed(other_node, "dns")["lastError"] == "it broke"
    assert page(other_node)["total"] == 1


def test_cache_keeps_at_most_its_size() -> None:
    cache = ReadCache(max_bytes=10, entry_overhead=0)
    cache.put("a", (b"12345",), 0)
    cache.put("b", (b"123", b"45"), 0)
    assert cache.get("a") is not None  # now the most recently used
    cache.put("c", (b"1",), 0)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ((b"12345",), None, (b"1",))
    cache.put("d", (b"x" * 11,), 0)  # larger than the whole cache: not kept
    assert cache.get("d") is None
    assert len(cache) == 2


def test_empty_answers_under_new_keys_do_not_pile_up() -> None:
    """A reader may send any number of search texts that match nothing: each order is
    empty, but its entry still counts against the cache's size."""
    cache = ReadCache(max_bytes=64 * 1024)
    for n in range(10_000):
        cache.put(("list-order", None, f"nothing-{n}"), (b"",), 0)
    assert len(cache) == 64 * 1024 // cache.entry_overhead
    assert cache.get(("list-order", None, "nothing-9999")) == (b"",)  # the newest kept


def test_a_change_through_another_process_is_served(
    tmp_path: Path, services: Services, registry: Registry
) -> None:
    """Node B, a real `modhub serve` on the same database, caches its answers; a change made
    here reaches it by NOTIFY on PostgreSQL (B's poll made an hour long) and by the 1 s
    fingerprint poll on SQLite (no notifications there)."""
    postgres = services.db.dialect == "postgresql"
    env = {"MODHUB_SYNC_POLL_SECONDS": "3600"} if postgres else {}
    node = start_server(tmp_path / "b" / "data", services.settings.db_url, env)
    try:
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(f"{node.url}{API}/auth/login", json=login).json()["accessToken"]
        with httpx.Client(base_url=node.url + API, headers=bearer(token)) as b:

            def detail() -> Any:
                return b.get("/modules/dns").json()

            def item() -> Any:
                return b.get("/modules", params={"q": "dns"}).json()["items"][0]

            for _ in range(2):  # the second answers come from B's cache
                assert detail()["status"] == item()["status"] == "REGISTERED"
            registry.set_status("dns", Status.ENABLED, actor=ACTOR)
            wait_for(lambda: detail()["status"] == "ENABLED", what="B to serve the new status")
            wait_for(lambda: item()["status"] == "ENABLED", what="B to list the new status")
            registry.set_config("dns", {"token": "s3cret"}, actor=ACTOR)
            wait_for(lambda: detail()["config"] == {"token": "********"}, what="B to serve config")
    finally:
        stop_server(node)
