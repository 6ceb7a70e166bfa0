"""Module configs as handlers get them (routes/dispatch.py ModuleConfigs), kept between
requests: a change is seen at once in this process (the registry listener), after the
route sync's reload from another (its notification or the fingerprint poll), and a read
that raced a change is never kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, text

from modhub.routes import ModuleConfigs
from modhub.services import Services
from tests.registry.helpers import ACTOR, manifest

SCHEMA: dict[str, Any] = {
    "host": {"type": "string", "required": True},
    "apiKey": {"type": "string", "sensitive": True},
}


@pytest.fixture
def kept(services: Services) -> ModuleConfigs:
    """The services' own configs (cached), with module `vc` configured."""
    services.registry.register(manifest("vc", config=SCHEMA), actor=ACTOR)
    services.registry.set_config("vc", {"host": "one", "apiKey": "k-1"}, actor=ACTOR)
    assert services.module_configs.cached
    return services.module_configs


def reads(services: Services) -> list[str]:
    """The config reads the database sees from now on."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "modules.config" in statement:
            seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", before)
    return seen


def change_behind_its_back(services: Services, host: str) -> None:
    """Change `vc`'s stored config as another process would: no listener here hears it."""
    with services.db.engine.begin() as connection:
        stored = connection.execute(text("SELECT config FROM modules WHERE name = 'vc'")).scalar()
        assert stored is not None
        value = stored if isinstance(stored, dict) else json.loads(stored)
        value["host"] = host
        connection.execute(
            text("UPDATE modules SET config = :c WHERE name = 'vc'"),
            {"c": json.dumps(value)},
        )


def test_a_config_is_read_once_then_kept(services: Services, kept: ModuleConfigs) -> None:
    assert kept.config_for_code("vc") == {"host": "one", "apiKey": "k-1"}
    seen = reads(services)
    for _ in range(3):
        config = kept.config_for_code("vc")
        config["host"] = "mutated by a caller"  # a copy: what is kept stays as it was
    assert kept.config_for_code("vc") == {"host": "one", "apiKey": "k-1"}
    assert seen == []


def test_a_change_in_this_process_is_seen_at_once(services: Services, kept: ModuleConfigs) -> None:
    kept.config_for_code("vc")
    services.registry.set_config("vc", {"host": "two", "apiKey": "k-2"}, actor=ACTOR)
    assert kept.config_for_code("vc") == {"host": "two", "apiKey": "k-2"}


def test_another_process_change_is_seen_after_the_route_sync_reloads(
    services: Services, kept: ModuleConfigs
) -> None:
    kept.config_for_code("vc")
    change_behind_its_back(services, "three")
    assert kept.config_for_code("vc")["host"] == "one"  # not heard of yet
    services.sync.load()  # as on its notification, or when the fingerprint moves
    assert kept.config_for_code("vc")["host"] == "three"


def test_a_read_that_raced_a_change_is_not_kept(services: Services, kept: ModuleConfigs) -> None:
    """A read that began before a change was heard may return the old value, but must not
    keep it: the next read goes to the database again."""
    seen = reads(services)

    def change_heard_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "modules.config" in statement and len(seen) == 1:
            kept.forget_all()  # the route sync's reload, in another thread

    event.listen(services.db.engine, "before_cursor_execute", change_heard_meanwhile)
    kept.config_for_code("vc")
    kept.config_for_code("vc")
    assert len(seen) == 2  # read again: the first read was not kept
    kept.config_for_code("vc")
    assert len(seen) == 2  # the second was


def test_uncached_configs_read_every_time(services: Services, kept: ModuleConfigs) -> None:
    fresh = ModuleConfigs(services.registry)  # not wired to any listener
    assert fresh.config_for_code("vc")["host"] == "one"
    change_behind_its_back(services, "four")
    assert fresh.config_for_code("vc")["host"] == "four"
