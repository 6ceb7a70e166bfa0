"""A dependency cycle is found whichever dependency it goes through: not only the
alphabetically first one (a walk that gives up after its first branch misses it)."""

from __future__ import annotations

import pytest

from modhub.errors import DependencyCycle
from modhub.registry import Registry, Status
from modhub.services import Services
from tests.registry.helpers import ACTOR, manifest, snapshot


@pytest.fixture
def registry(services: Services) -> Registry:
    return services.registry


def test_a_cycle_through_the_second_dependency_is_refused(
    services: Services, registry: Registry
) -> None:
    # a -> {b, c}, c -> a: the cycle goes through c, b leads nowhere.
    registry.register(manifest("mod-b"), actor=ACTOR)
    registry.register(manifest("mod-c", deps={"mod-a": "^1.0.0"}), actor=ACTOR)
    before = snapshot(services.db)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(
            manifest("mod-a", deps={"mod-b": "^1.0.0", "mod-c": "^1.0.0"}), actor=ACTOR
        )

    assert caught.value.cycle == ["mod-a", "mod-c", "mod-a"]
    assert snapshot(services.db) == before


def test_a_cycle_behind_a_deep_dead_end_is_refused(registry: Registry) -> None:
    # a -> {b, d}; b -> x -> y (a dead end two levels deep); d -> e -> a.
    registry.register(manifest("mod-y"), actor=ACTOR)
    registry.register(manifest("mod-x", deps={"mod-y": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("mod-b", deps={"mod-x": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("mod-e", deps={"mod-a": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("mod-d", deps={"mod-e": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(
            manifest("mod-a", deps={"mod-b": "^1.0.0", "mod-d": "^1.0.0"}), actor=ACTOR
        )

    assert caught.value.cycle == ["mod-a", "mod-d", "mod-e", "mod-a"]


def test_a_cycle_past_a_dead_end_inside_a_dependency_is_refused(registry: Registry) -> None:
    # a -> m; m -> {k, n}; k leads nowhere, n -> a.
    registry.register(manifest("mod-k"), actor=ACTOR)
    registry.register(manifest("mod-n", deps={"mod-a": "^1.0.0"}), actor=ACTOR)
    registry.register(manifest("mod-m", deps={"mod-k": "^1.0.0", "mod-n": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.register(manifest("mod-a", deps={"mod-m": "^1.0.0"}), actor=ACTOR)

    assert caught.value.cycle == ["mod-a", "mod-m", "mod-n", "mod-a"]


def test_an_upgrade_refuses_a_cycle_through_its_second_dependency(registry: Registry) -> None:
    # z needs b; b 2.0.0 needs {c, z}: switching b to it closes b -> z -> b through its
    # last dependency, c leading nowhere.
    # b 2.0.0 is registered before z exists; z arrives later.
    registry.register(manifest("mod-b"), actor=ACTOR)
    registry.register(manifest("mod-c"), actor=ACTOR)
    two = manifest("mod-b", "2.0.0", deps={"mod-c": "^1.0.0", "mod-z": "^1.0.0"})
    registry.register(two, actor=ACTOR)
    registry.register(manifest("mod-z", deps={"mod-b": "^1.0.0"}), actor=ACTOR)

    with pytest.raises(DependencyCycle) as caught:
        registry.switch_version("mod-b", "2.0.0", actor=ACTOR, status=Status.REGISTERED, config={})

    assert caught.value.cycle == ["mod-b", "mod-z", "mod-b"]
    assert registry.get("mod-b").version == "1.0.0"
