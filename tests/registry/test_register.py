"""Registering manifests: new modules, new versions, duplicates, invalid ones, cycles, races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from modhub.errors import Conflict, DependencyCycle, InvalidInput
from modhub.registry import Registry, Status
from modhub.registry import rows as rows_module
from modhub.services import Services
from tests.registry.helpers import ACTOR, audit, manifest, module_id, rows, snapshot


@pytest.fixture
def registry(services: Services) -> Registry:
    return services.registry


def test_register_stores_a_registered_module(services: Services, registry: Registry) -> None:
    data = manifest("core-auth", "1.2.0", description="Auth", author="Team", license="MIT")

    detail = registry.register(data, actor=ACTOR)

    assert detail.name == "core-auth"
    assert detail.version == "1.2.0"
    assert detail.status == Status.REGISTERED
    assert detail.display_name == "core-auth 1.2.0"
    assert (detail.description, detail.author, detail.license) == ("Auth", "Team", "MIT")
    assert detail.manifest == data
    assert detail.config == {}
    assert detail.dependencies == []
    assert detail.dependents == []
    assert [(v.version, v.active) for v in detail.versions] == [("1.2.0", True)]
    assert detail.last_error is None
    assert registry.get("core-auth") == detail
    [entry] = audit(services.db, "core-auth")
    assert (entry.actor, entry.action, entry.detail) == (
        ACTOR,
        "module.register",
        {"version": "1.2.0"},
    )


def test_register_is_listed(registry: Registry) -> None:
    registry.register(manifest("beta"), actor=ACTOR)
    registry.register(manifest("alpha"), actor=ACTOR)

    page = registry.list_modules()

    assert page.total == 2
    assert [m.name for m in page.items] == ["alpha", "beta"]
    assert {m.status for m in page.items} == {Status.REGISTERED}


def test_dependencies_show_installed_version_and_whether_satisfied(registry: Registry) -> None:
    registry.register(manifest("core-auth", "1.4.0"), actor=ACTOR)
    registry.register(manifest("old-lib", "1.0.0"), actor=ACTOR)
    deps = {"core-auth": "^1.0.0", "old-lib": "^2.0.0", "ghost": "~1.2"}

    detail = registry.register(manifest("vmware", deps=deps), actor=ACTOR)

    shown = {d["name"]: d for d in detail.model_dump()["dependencies"]}
    assert shown == {
        "core-auth": {
            "name": "core-auth",
            "range": "^1.0.0",
            "installedVersion": "1.4.0",
            "status": Status.REGISTERED,
            "satisfied": True,
        },
        "old-lib": {
            "name": "old-lib",
            "range": "^2.0.0",
            "installedVersion": "1.0.0",
            "status": Status.REGISTERED,
            "satisfied": False,
        },
        "ghost": {
            "name": "ghost",
            "range": "~1.2",
            "installedVersion": None,
            "status": None,
            "satisfied": False,
        },
    }
    dependents = registry.get("core-auth").dependents
    assert [(d.name, d.range, d.version) for d in dependents] == [("vmware", "^1.0.0", "1.0.0")]


def test_a_dependency_registered_later_satisfies(registry: Registry) -> None:
    registry.register(manifest("app", deps={"lib": "^1.0.0"}), actor=ACTOR)
    assert registry.get("app").dependencies[0].satisfied is False

    registry.register(manifest("lib", "1.0.5"), actor=ACTOR)

    [dep] = registry.get("app").dependencies
    assert (dep.installed_version, dep.satisfied) == ("1.0.5", True)


def test_same_name_and_version_is_a_conflict(services: Services, registry: Registry) -> None:
    registry.register(manifest("core-auth"), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        registry.register(manifest("core-auth", displayName="Other"), actor=ACTOR)

    assert "core-auth" in caught.value.detail
    assert "1.0.0" in caught.value.detail
    assert snapshot(services.db) == before
    assert registry.get("core-auth").display_name == "core-auth 1.0.0"


def test_a_higher_version_is_stored_as_available(services: Services, registry: Registry) -> None:
    first = manifest("core-auth", "1.0.0")
    registry.register(first, actor=ACTOR)

    detail = registry.register(
        manifest("core-auth", "1.1.0", deps={"other": "^1.0.0"}), actor=ACTOR
    )

    assert detail.version == "1.0.0"
    assert detail.display_name == "core-auth 1.0.0"
    assert detail.manifest == first
    assert detail.dependencies == []
    assert [(v.version, v.active) for v in detail.versions] == [
        ("1.1.0", False),
        ("1.0.0", True),
    ]
    assert registry.get("core-auth") == detail
    assert rows(services.db, module_id(services.db, "core-auth")) == {
        "modules": 1,
        "module_versions": 2,
        "module_dependencies": 0,
    }
    assert [e.detail["version"] for e in audit(services.db, "core-auth")] == ["1.0.0", "1.1.0"]


def test_versions_are_listed_newest_first(registry: Registry) -> None:
    for version in ("1.0.0", "1.10.0", "1.2.0", "2.0.0-beta.1", "2.0.0"):
        registry.register(manifest("lib", version), actor=ACTOR)

    versions = [v.version for v in registry.get("lib").versions]

    assert versions == ["2.0.0", "2.0.0-beta.1", "1.10.0", "1.2.0", "1.0.0"]
    assert registry.get("lib").version == "1.0.0"


def test_an_invalid_manifest_lists_every_error_under_manifest(
    services: Services, registry: Registry
) -> None:
    data = {"name": "Bad Name", "version": "1.0", "displayName": "x", "unknown": 1}

    with pytest.raises(InvalidInput) as caught:
        registry.register(data, actor=ACTOR)

    errors = caught.value.errors or []
    paths = {e["path"] for e in errors}
    assert {"/manifest/name", "/manifest/version", "/manifest/unknown"} <= paths
    assert all(p.startswith("/manifest/") for p in paths), paths
    assert all(e["code"] and e["message"] for e in errors)
    assert registry.list_modules().total == 0
    assert audit(services.db) == []


def test_a_manifest_missing_a_required_field_points_at_it(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.register({"name": "lib", "version": "1.0.0"}, actor=ACTOR)

    assert [e["path"] for e in caught.value.errors or []] == ["/manifest/displayName"]


def test_a_manifest_depending_on_itself_is_invalid(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.register(manifest("loop", deps={"loop": "^1.0.0"}), actor=ACTOR)

    paths = [e["path"] for e in caught.value.errors or []]
    assert paths == ["/manifest/dependencies/modules/loop"]
    assert registry.list_modules().total == 0


def test_a_two_module_cycle_is_refused(services: Services, registry: Registry) -> None:
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(manifest("beta", deps={"alpha": "^1.0.0"}), actor=ACTOR)

    assert caught.value.cycle == ["beta", "alpha", "beta"]
    assert isinstance(caught.value, InvalidInput)
    assert "beta → alpha → beta" in caught.value.detail
    [error] = caught.value.errors or []
    assert error["code"] == "dependency_cycle"
    assert error["path"] == "/dependencies/modules/alpha"
    assert snapshot(services.db) == before


def test_a_three_module_cycle_is_named_in_full(services: Services, registry: Registry) -> None:
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("beta", deps={"gamma": "^1.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(
            manifest("gamma", deps={"alpha": "^1.0.0", "delta": "^1.0.0"}), actor=ACTOR
        )

    assert caught.value.cycle == ["gamma", "alpha", "beta", "gamma"]
    for name in ("alpha", "beta", "gamma"):
        assert name in caught.value.detail
    assert snapshot(services.db) == before


def test_a_new_version_that_closes_a_cycle_is_refused(
    services: Services, registry: Registry
) -> None:
    # Issue 3: "Registering a manifest that closes a dependency cycle is a 422 that names
    # the cycle" - a new version of a known module too, not only at its upgrade.
    registry.register(manifest("beta"), actor=ACTOR)
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(manifest("beta", "2.0.0", deps={"alpha": "^1.0.0"}), actor=ACTOR)

    assert caught.value.cycle == ["beta", "alpha", "beta"]
    [error] = caught.value.errors or []
    assert (error["path"], error["code"]) == ("/dependencies/modules/alpha", "dependency_cycle")
    assert snapshot(services.db) == before
    assert [v.version for v in registry.get("beta").versions] == ["1.0.0"]


def test_a_new_version_closing_a_longer_cycle_is_named_in_full(registry: Registry) -> None:
    registry.register(manifest("gamma"), actor=ACTOR)
    registry.register(manifest("beta", deps={"gamma": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(
            manifest("gamma", "1.1.0", deps={"base": "^1.0.0", "alpha": "^1.0.0"}), actor=ACTOR
        )

    assert caught.value.cycle == ["gamma", "alpha", "beta", "gamma"]
    assert "gamma → alpha → beta → gamma" in caught.value.detail


def test_a_new_version_that_closes_no_cycle_is_stored(registry: Registry) -> None:
    registry.register(manifest("beta"), actor=ACTOR)
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("base"), actor=ACTOR)

    # beta drops nothing and adds base; alpha's new version keeps depending on beta
    registry.register(manifest("beta", "1.1.0", deps={"base": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("alpha", "1.1.0", deps={"beta": "^1.1.0"}), actor=ACTOR)

    assert [v.version for v in registry.get("beta").versions] == ["1.1.0", "1.0.0"]
    assert [v.version for v in registry.get("alpha").versions] == ["1.1.0", "1.0.0"]


def test_an_upgrade_still_refuses_a_cycle_the_graph_made_since(registry: Registry) -> None:
    # beta 2.0.0 is registered when nothing depends on gamma; gamma arrives later, needing
    # alpha; switching beta to 2.0.0 would then close beta -> gamma -> alpha -> beta.
    registry.register(manifest("beta"), actor=ACTOR)
    registry.register(manifest("alpha", deps={"beta": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("beta", "2.0.0", deps={"gamma": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("gamma", deps={"alpha": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.switch_version("beta", "2.0.0", actor=ACTOR, status=Status.REGISTERED, config={})

    assert caught.value.cycle == ["beta", "gamma", "alpha", "beta"]
    assert registry.get("beta").version == "1.0.0"


def test_a_cycle_through_a_wide_graph_is_found(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The walk reads the graph a level at a time in chunks of names; make the chunks tiny.
    monkeypatch.setattr(rows_module, "IN_CHUNK", 2)
    leaves = [f"leaf-{i}" for i in range(5)]
    for leaf in leaves:
        registry.register(manifest(leaf, deps={"root": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("hub", deps=dict.fromkeys(leaves, "^1.0.0")), actor=ACTOR)
    registry.register(manifest("side", deps={"leaf-4": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(manifest("root", deps={"hub": "^1.0.0"}), actor=ACTOR)

    assert caught.value.cycle == ["root", "hub", "leaf-0", "root"]
    registry.register(manifest("base"), actor=ACTOR)
    registry.register(manifest("root", deps={"base": "^1.0.0"}), actor=ACTOR)  # no cycle


def test_shared_dependencies_are_not_a_cycle(registry: Registry) -> None:
    registry.register(manifest("base"), actor=ACTOR)
    registry.register(manifest("left", deps={"base": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("right", deps={"base": "^1.0.0"}), actor=ACTOR)

    detail = registry.register(
        manifest("top", deps={"left": "^1.0.0", "right": "^1.0.0"}), actor=ACTOR
    )

    assert {d.name for d in detail.dependencies} == {"left", "right"}
    assert registry.list_modules().total == 4


def test_fifty_concurrent_registrations_store_one(services: Services) -> None:
    data = manifest("racer", "1.0.0")
    threads = 50
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            services.registry.register(data, actor=ACTOR)
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(attempt, range(threads)))  # any other exception re-raises

    assert outcomes.count("created") == 1
    assert outcomes.count("conflict") == threads - 1
    assert rows(services.db, module_id(services.db, "racer")) == {
        "modules": 1,
        "module_versions": 1,
        "module_dependencies": 0,
    }
    assert len(audit(services.db, "racer", "module.register")) == 1


def test_concurrent_new_versions_of_one_module_are_all_stored(services: Services) -> None:
    services.registry.register(manifest("racer", "1.0.0"), actor=ACTOR)
    versions = [f"1.{i}.0" for i in range(1, 11)] * 2
    barrier = threading.Barrier(len(versions))

    def attempt(version: str) -> str:
        barrier.wait()
        try:
            services.registry.register(manifest("racer", version), actor=ACTOR)
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(len(versions)) as pool:
        outcomes = list(pool.map(attempt, versions))

    assert outcomes.count("created") == 10
    assert outcomes.count("conflict") == 10
    assert len(services.registry.get("racer").versions) == 11
    assert services.registry.get("racer").version == "1.0.0"


def test_concurrent_registrations_cannot_close_a_cycle(services: Services) -> None:
    """a → b and b → a registered at the same moment: one of them must be refused."""
    pairs = 8
    barrier = threading.Barrier(pairs * 2)

    def attempt(job: tuple[str, str]) -> str:
        name, dep = job
        barrier.wait()
        try:
            services.registry.register(manifest(name, deps={dep: "^1.0.0"}), actor=ACTOR)
        except DependencyCycle:
            return "cycle"
        return "created"

    jobs = [(f"a{i}", f"b{i}") for i in range(pairs)] + [(f"b{i}", f"a{i}") for i in range(pairs)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = dict(zip(jobs, pool.map(attempt, jobs), strict=True))

    for i in range(pairs):
        pair = sorted([outcomes[(f"a{i}", f"b{i}")], outcomes[(f"b{i}", f"a{i}")]])
        assert pair == ["created", "cycle"], (i, pair)
    assert services.registry.list_modules().total == pairs


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"author": "a" * 201}, "/manifest/author"),
        ({"license": "l" * 101}, "/manifest/license"),
        (
            {"dependencies": {"modules": {"lib": ">=1.0.0 " + " ".join(["<2.0.0"] * 50)}}},
            "/manifest/dependencies/modules/lib",
        ),
    ],
)
def test_values_longer_than_their_column_are_invalid_on_every_database(
    services: Services, registry: Registry, fields: dict[str, object], path: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.register(manifest("app", **fields), actor=ACTOR)

    assert [(e["path"], e["code"]) for e in caught.value.errors or []] == [(path, "too_long")]
    assert registry.list_modules().total == 0


def test_values_as_long_as_their_column_are_stored(registry: Registry) -> None:
    detail = registry.register(manifest("app", author="a" * 200, license="l" * 100), actor=ACTOR)

    assert (len(detail.author or ""), len(detail.license or "")) == (200, 100)
