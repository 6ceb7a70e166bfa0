"""Status changes: the state machine, dependencies, cascades, dry runs, all-or-nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import update

from modhub.db.models import Module
from modhub.errors import Conflict, InvalidInput, NotFound
from modhub.registry import Registry, Status
from modhub.registry.status import TRANSITIONS, check_transition, path_to
from modhub.registry.types import ModuleDetail, Plan
from modhub.services import Services
from tests.registry.helpers import ACTOR, audit, manifest, snapshot, statuses, transitions

ENABLED, DISABLED, REGISTERED = Status.ENABLED, Status.DISABLED, Status.REGISTERED


@pytest.fixture
def registry(services: Services) -> Registry:
    return services.registry


def enable(registry: Registry, name: str, actor: str = ACTOR, **options: Any) -> ModuleDetail:
    result = registry.set_status(name, ENABLED, actor=actor, **options)
    assert isinstance(result, ModuleDetail)
    return result


def disable(registry: Registry, name: str, actor: str = ACTOR, **options: Any) -> ModuleDetail:
    result = registry.set_status(name, DISABLED, actor=actor, **options)
    assert isinstance(result, ModuleDetail)
    return result


def chain(registry: Registry) -> None:
    """Register app → mid → base (app depends on mid, mid on base)."""
    registry.register(manifest("base"), actor=ACTOR)
    registry.register(manifest("mid", deps={"base": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("app", deps={"mid": "^1.0.0"}), actor=ACTOR)


# -- the state machine itself ----------------------------------------------------------------


def test_transitions_of_the_design() -> None:
    assert path_to(REGISTERED, ENABLED) == [Status.INSTALLING, DISABLED, ENABLED]
    assert path_to(REGISTERED, DISABLED) == [Status.INSTALLING, DISABLED]
    assert path_to(DISABLED, ENABLED) == [ENABLED]
    assert path_to(ENABLED, DISABLED) == [DISABLED]
    assert path_to(ENABLED, ENABLED) == []
    assert TRANSITIONS[ENABLED] >= {DISABLED, Status.UPDATING, Status.REMOVING}
    assert TRANSITIONS[DISABLED] >= {ENABLED, Status.UPDATING, Status.REMOVING}
    assert TRANSITIONS[Status.UPDATING] >= {ENABLED, DISABLED}


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (REGISTERED, ENABLED),
        (REGISTERED, DISABLED),
        (Status.INSTALLING, ENABLED),
        (ENABLED, REGISTERED),
        (DISABLED, Status.INSTALLING),
        (Status.UPDATING, REGISTERED),
    ],
)
def test_transitions_outside_the_design_are_refused(current: Status, target: Status) -> None:
    with pytest.raises(Conflict) as caught:
        check_transition("mod", current, target)

    assert str(current) in caught.value.detail
    assert str(target) in caught.value.detail


# -- enabling and disabling one module --------------------------------------------------------


def test_enabling_a_registered_module_installs_it_on_the_way(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("solo"), actor=ACTOR)

    detail = enable(registry, "solo")

    assert detail.status == ENABLED
    assert registry.get("solo").status == ENABLED
    assert transitions(services.db, "solo") == [
        ("solo", "REGISTERED", "INSTALLING"),
        ("solo", "INSTALLING", "DISABLED"),
        ("solo", "DISABLED", "ENABLED"),
    ]
    assert {e.actor for e in audit(services.db, "solo", "module.status")} == {ACTOR}


def test_disable_and_enable_again(services: Services, registry: Registry) -> None:
    registry.register(manifest("solo"), actor=ACTOR)
    enable(registry, "solo")

    assert disable(registry, "solo", actor="bob").status == DISABLED
    assert enable(registry, "solo", actor="carol").status == ENABLED

    entries = audit(services.db, "solo", "module.status")[-2:]
    assert [(e.actor, e.detail["from"], e.detail["to"]) for e in entries] == [
        ("bob", "ENABLED", "DISABLED"),
        ("carol", "DISABLED", "ENABLED"),
    ]


def test_enabling_an_enabled_module_changes_nothing(services: Services, registry: Registry) -> None:
    registry.register(manifest("solo"), actor=ACTOR)
    enable(registry, "solo")
    before = snapshot(services.db)

    assert enable(registry, "solo").status == ENABLED
    assert enable(registry, "solo", cascade=True).status == ENABLED

    assert snapshot(services.db) == before


def test_disabling_a_disabled_module_changes_nothing(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("solo"), actor=ACTOR)
    enable(registry, "solo")
    disable(registry, "solo")
    before = snapshot(services.db)

    assert disable(registry, "solo").status == DISABLED

    assert snapshot(services.db) == before


@pytest.mark.parametrize("target", [REGISTERED, Status.INSTALLING, Status.REMOVING])
def test_only_enabled_or_disabled_can_be_asked_for(registry: Registry, target: Status) -> None:
    registry.register(manifest("solo"), actor=ACTOR)

    with pytest.raises(InvalidInput) as caught:
        registry.set_status("solo", target, actor=ACTOR)

    assert [e["path"] for e in caught.value.errors or []] == ["/status"]
    assert registry.get("solo").status == REGISTERED


def test_an_unknown_module_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        registry.set_status("ghost", ENABLED, actor=ACTOR)


@pytest.mark.parametrize("busy", [Status.INSTALLING, Status.UPDATING, Status.REMOVING])
def test_a_module_in_a_transitional_state_is_refused(
    services: Services, registry: Registry, busy: Status
) -> None:
    registry.register(manifest("solo"), actor=ACTOR)
    with services.db.write() as session:
        session.execute(update(Module).where(Module.name == "solo").values(status=busy))

    for target in (ENABLED, DISABLED):
        with pytest.raises(Conflict) as caught:
            registry.set_status("solo", target, actor=ACTOR)
        assert str(busy) in caught.value.detail
    assert statuses(services.db) == {"solo": busy}


# -- dependencies when enabling ---------------------------------------------------------------


def test_enabling_lists_every_unmet_dependency(services: Services, registry: Registry) -> None:
    registry.register(manifest("old-lib", "1.0.0"), actor=ACTOR)
    registry.register(manifest("off-lib"), actor=ACTOR)
    enable(registry, "off-lib")
    disable(registry, "off-lib")
    registry.register(manifest("fresh-lib"), actor=ACTOR)
    registry.register(manifest("good-lib"), actor=ACTOR)
    enable(registry, "good-lib")
    deps = {
        "ghost": "^1.0.0",
        "old-lib": "^2.0.0",
        "off-lib": "^1.0.0",
        "fresh-lib": "^1.0.0",
        "good-lib": "^1.0.0",
    }
    registry.register(manifest("app", deps=deps), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        enable(registry, "app")

    unmet = {u["dependency"]: u for u in caught.value.extra["unmet"]}
    assert set(unmet) == {"ghost", "old-lib", "off-lib", "fresh-lib"}
    assert "not registered" in unmet["ghost"]["reason"]
    assert "1.0.0" in unmet["old-lib"]["reason"]
    assert unmet["old-lib"]["range"] == "^2.0.0"
    assert "DISABLED" in unmet["off-lib"]["reason"]
    assert "REGISTERED" in unmet["fresh-lib"]["reason"]
    assert {u["module"] for u in unmet.values()} == {"app"}
    for name in ("ghost", "old-lib", "off-lib", "fresh-lib"):
        assert name in caught.value.detail
    assert "good-lib" not in caught.value.detail
    assert snapshot(services.db) == before


def test_cascade_cannot_fix_a_missing_or_out_of_range_dependency(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("old-lib", "1.0.0"), actor=ACTOR)
    registry.register(manifest("app", deps={"ghost": "^1.0.0", "old-lib": "^2.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    for dry_run in (False, True):
        with pytest.raises(Conflict) as caught:
            registry.set_status("app", ENABLED, actor=ACTOR, cascade=True, dry_run=dry_run)
        assert {u["dependency"] for u in caught.value.extra["unmet"]} == {"ghost", "old-lib"}

    assert snapshot(services.db) == before


def test_enabling_with_enabled_dependencies_succeeds(registry: Registry) -> None:
    chain(registry)
    enable(registry, "base")
    enable(registry, "mid")

    detail = enable(registry, "app")

    assert detail.status == ENABLED
    assert [(d.name, d.status, d.satisfied) for d in detail.dependencies] == [
        ("mid", ENABLED, True)
    ]


def test_cascade_enables_dependencies_in_dependency_order(
    services: Services, registry: Registry
) -> None:
    chain(registry)

    detail = enable(registry, "app", cascade=True)

    assert detail.status == ENABLED
    assert statuses(services.db) == {"base": ENABLED, "mid": ENABLED, "app": ENABLED}
    moves = transitions(services.db)
    assert [m for m, _, to in moves if to == "ENABLED"] == ["base", "mid", "app"]
    assert [m for m, _, _ in moves] == ["base"] * 3 + ["mid"] * 3 + ["app"] * 3


def test_cascade_skips_dependencies_already_enabled(services: Services, registry: Registry) -> None:
    chain(registry)
    enable(registry, "base")
    enable(registry, "mid")
    disable(registry, "mid")
    already = len(transitions(services.db))

    enable(registry, "app", cascade=True)

    assert transitions(services.db)[already:] == [
        ("mid", "DISABLED", "ENABLED"),
        ("app", "REGISTERED", "INSTALLING"),
        ("app", "INSTALLING", "DISABLED"),
        ("app", "DISABLED", "ENABLED"),
    ]


def test_dry_run_enable_returns_the_plan_and_changes_nothing(
    services: Services, registry: Registry
) -> None:
    chain(registry)
    enable(registry, "base")
    disable(registry, "base")
    before = snapshot(services.db)

    plan = registry.set_status("app", ENABLED, actor=ACTOR, cascade=True, dry_run=True)

    assert isinstance(plan, Plan)
    assert plan.dry_run is True
    assert [(s.module, s.from_, s.to) for s in plan.steps] == [
        ("base", DISABLED, ENABLED),
        ("mid", REGISTERED, ENABLED),
        ("app", REGISTERED, ENABLED),
    ]
    assert plan.model_dump()["steps"][0] == {"module": "base", "from": DISABLED, "to": ENABLED}
    assert snapshot(services.db) == before


def test_dry_run_without_cascade_still_refuses(services: Services, registry: Registry) -> None:
    chain(registry)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        registry.set_status("app", ENABLED, actor=ACTOR, dry_run=True)

    assert [u["dependency"] for u in caught.value.extra["unmet"]] == ["mid"]
    assert snapshot(services.db) == before


def test_dry_run_of_an_enabled_module_plans_nothing(registry: Registry) -> None:
    registry.register(manifest("solo"), actor=ACTOR)
    enable(registry, "solo")

    plan = registry.set_status("solo", ENABLED, actor=ACTOR, dry_run=True)

    assert isinstance(plan, Plan)
    assert plan.steps == []


# -- dependents when disabling ----------------------------------------------------------------


def test_disabling_with_enabled_dependents_names_them(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("base"), actor=ACTOR)
    for name in ("left", "right", "idle"):
        registry.register(manifest(name, deps={"base": "^1.0.0"}), actor=ACTOR)
    enable(registry, "left", cascade=True)
    enable(registry, "right")
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        disable(registry, "base")

    assert caught.value.extra["dependents"] == ["left", "right"]
    assert "left" in caught.value.detail
    assert "right" in caught.value.detail
    assert "idle" not in caught.value.detail
    assert snapshot(services.db) == before


def test_disabling_with_only_disabled_dependents_succeeds(registry: Registry) -> None:
    chain(registry)
    enable(registry, "app", cascade=True)
    disable(registry, "app")
    disable(registry, "mid")

    assert disable(registry, "base").status == DISABLED


def test_cascade_disables_dependents_first(services: Services, registry: Registry) -> None:
    chain(registry)
    enable(registry, "app", cascade=True)
    already = len(transitions(services.db))

    detail = disable(registry, "base", cascade=True)

    assert detail.status == DISABLED
    assert statuses(services.db) == {"base": DISABLED, "mid": DISABLED, "app": DISABLED}
    assert transitions(services.db)[already:] == [
        ("app", "ENABLED", "DISABLED"),
        ("mid", "ENABLED", "DISABLED"),
        ("base", "ENABLED", "DISABLED"),
    ]


def test_dry_run_disable_returns_the_plan_and_changes_nothing(
    services: Services, registry: Registry
) -> None:
    chain(registry)
    enable(registry, "app", cascade=True)
    before = snapshot(services.db)

    plan = registry.set_status("base", DISABLED, actor=ACTOR, cascade=True, dry_run=True)

    assert isinstance(plan, Plan)
    assert [(s.module, s.from_, s.to) for s in plan.steps] == [
        ("app", ENABLED, DISABLED),
        ("mid", ENABLED, DISABLED),
        ("base", ENABLED, DISABLED),
    ]
    assert snapshot(services.db) == before


# -- required config ----------------------------------------------------------------------------


REQUIRED = {
    "host": {"type": "string", "required": True},
    "password": {"type": "password", "required": True},
    "port": {"type": "integer", "required": True, "default": 443},
    "note": {"type": "string"},
}


def test_enabling_without_required_config_lists_the_keys(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("vc", config=REQUIRED), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        enable(registry, "vc")

    assert caught.value.extra["missingConfig"] == [{"module": "vc", "keys": ["host", "password"]}]
    assert "host" in caught.value.detail
    assert "password" in caught.value.detail
    assert snapshot(services.db) == before

    registry.set_config("vc", {"host": "vc.local", "password": "s3cret-pass"}, actor=ACTOR)
    assert enable(registry, "vc").status == ENABLED


def test_cascade_refuses_a_dependency_without_required_config(
    services: Services, registry: Registry
) -> None:
    registry.register(manifest("vc", config=REQUIRED), actor=ACTOR)
    registry.register(manifest("app", deps={"vc": "^1.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(Conflict) as caught:
        enable(registry, "app", cascade=True)

    assert caught.value.extra["missingConfig"] == [{"module": "vc", "keys": ["host", "password"]}]
    assert snapshot(services.db) == before


# -- all or nothing -----------------------------------------------------------------------------


def test_a_failure_half_way_leaves_the_database_as_it_was(
    services: Services, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modhub.registry.service as service

    chain(registry)
    before = snapshot(services.db)
    real = service.record
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:  # base is ENABLED, mid is half-way
            raise RuntimeError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(service, "record", failing)

    with pytest.raises(RuntimeError, match="disk full"):
        enable(registry, "app", cascade=True)

    assert calls == 5
    assert snapshot(services.db) == before
    monkeypatch.setattr(service, "record", real)
    assert enable(registry, "app", cascade=True).status == ENABLED


def test_enabling_a_dependent_while_disabling_its_dependency(services: Services) -> None:
    """The two race; exactly one wins, the other is refused, and nothing deadlocks."""
    registry = services.registry
    registry.register(manifest("mid"), actor=ACTOR)
    registry.register(manifest("app", deps={"mid": "^1.0.0"}), actor=ACTOR)
    enable(registry, "app", cascade=True)

    def attempt(barrier: threading.Barrier, name: str, target: Status) -> str:
        barrier.wait()
        try:
            registry.set_status(name, target, actor=ACTOR)
        except Conflict:
            return "refused"
        return "done"

    for _ in range(15):
        disable(registry, "app")
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            up = pool.submit(attempt, barrier, "app", ENABLED)
            down = pool.submit(attempt, barrier, "mid", DISABLED)
            outcomes = sorted([up.result(), down.result()])  # any other error re-raises
        assert outcomes == ["done", "refused"]
        final = statuses(services.db)
        assert final in ({"app": ENABLED, "mid": ENABLED}, {"app": DISABLED, "mid": DISABLED})
        enable(registry, "mid")
