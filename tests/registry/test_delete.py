"""Deleting modules: every row goes, refused while others depend on it, dry runs."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from modhub.db.models import Module
from modhub.errors import Conflict, NotFound
from modhub.registry import Registry, Status
from modhub.registry.types import Plan
from modhub.services import Services
from tests.registry.helpers import ACTOR, audit, manifest, module_id, rows, snapshot

GONE = {"modules": 0, "module_versions": 0, "module_dependencies": 0}


@pytest.fixture
def registry(services: Services) -> Registry:
    registry = services.registry
    registry.register(manifest("lib"), actor=ACTOR)
    registry.register(manifest("util"), actor=ACTOR)
    registry.register(manifest("app", deps={"lib": "^1.0.0", "util": "*"}), actor=ACTOR)
    registry.register(manifest("app", "1.1.0"), actor=ACTOR)
    return registry


def test_delete_removes_the_module_its_versions_and_dependencies(
    services: Services, registry: Registry
) -> None:
    app = module_id(services.db, "app")
    assert rows(services.db, app) == {
        "modules": 1,
        "module_versions": 2,
        "module_dependencies": 2,
    }

    assert registry.delete("app", actor=ACTOR) is None

    assert rows(services.db, app) == GONE
    with pytest.raises(NotFound):
        registry.get("app")
    assert [m.name for m in registry.list_modules().items] == ["lib", "util"]
    assert registry.get("lib").dependents == []
    assert rows(services.db, module_id(services.db, "lib"))["modules"] == 1


def test_delete_is_audited_with_the_actor(services: Services, registry: Registry) -> None:
    registry.delete("app", actor="bob")

    entries = audit(services.db, "app")[-2:]
    assert [(e.actor, e.action) for e in entries] == [
        ("bob", "module.status"),
        ("bob", "module.remove"),
    ]
    assert entries[0].detail == {"from": "REGISTERED", "to": "REMOVING"}
    assert entries[1].detail == {"version": "1.0.0"}


def test_an_enabled_module_without_dependents_can_be_deleted(
    services: Services, registry: Registry
) -> None:
    registry.set_status("app", Status.ENABLED, actor=ACTOR, cascade=True)

    registry.delete("app", actor=ACTOR)

    assert {m.name: m.status for m in registry.list_modules().items} == {
        "lib": Status.ENABLED,
        "util": Status.ENABLED,
    }


def test_delete_is_refused_while_others_depend_on_it(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("other", deps={"lib": "~1.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        registry.delete("lib", actor=ACTOR)

    assert caught.value.extra["dependents"] == ["app", "other"]
    assert "app" in caught.value.detail
    assert "other" in caught.value.detail
    assert snapshot(services.db) == before


def test_a_module_can_be_deleted_once_its_dependents_are_gone(registry: Registry) -> None:
    registry.delete("app", actor=ACTOR)

    registry.delete("lib", actor=ACTOR)

    assert [m.name for m in registry.list_modules().items] == ["util"]


def test_dry_run_returns_the_plan_and_changes_nothing(
    services: Services, registry: Registry
) -> None:
    before = snapshot(services.db)

    plan = registry.delete("app", actor=ACTOR, dry_run=True)

    assert isinstance(plan, Plan)
    assert plan.dry_run is True
    assert plan.model_dump() == {
        "dryRun": True,
        "steps": [{"module": "app", "from": Status.REGISTERED, "to": None}],
    }
    assert snapshot(services.db) == before


def test_dry_run_of_a_refused_delete_is_refused(services: Services, registry: Registry) -> None:
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        registry.delete("lib", actor=ACTOR, dry_run=True)

    assert caught.value.extra["dependents"] == ["app"]
    assert snapshot(services.db) == before


def test_deleting_an_unknown_module_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        registry.delete("ghost", actor=ACTOR)


def test_a_deleted_module_can_be_registered_again(registry: Registry) -> None:
    registry.delete("app", actor=ACTOR)

    detail = registry.register(manifest("app", "2.0.0"), actor=ACTOR)

    assert detail.status == Status.REGISTERED
    assert [v.version for v in detail.versions] == ["2.0.0"]
    assert detail.dependencies == []


def test_the_database_cascades_a_module_delete(services: Services, registry: Registry) -> None:
    """Without the ORM: the foreign keys themselves take versions and dependencies along."""
    app = module_id(services.db, "app")

    with services.db.write() as session:
        session.execute(delete(Module).where(Module.id == app))

    assert rows(services.db, app) == GONE
