"""A module's stored data through removal and recovery, and the quota a manifest gets.

Every test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modhub.db.models import Operation
from modhub.errors import NotFound
from modhub.lifecycle import recover
from modhub.lifecycle.service import quota_bytes, storage_quota_bytes
from modhub.manifest import Manifest
from modhub.registry import Status
from modhub.registry.types import RemovalPlan
from modhub.services import Services
from modhub.settings import Settings
from tests.lifecycle.conftest import ACTOR, write_module
from tests.lifecycle.test_service import enable

MB = 1024 * 1024


def stock(services: Services, module: str, count: int = 3) -> None:
    for index in range(count):
        services.store.set(module, f"k{index}", {"n": index}, quota_bytes=MB)


def register(services: Services, name: str) -> None:
    services.registry.register({"name": name, "version": "1.0.0", "displayName": name}, actor=ACTOR)


def test_remove_deletes_the_modules_data_and_logs_it(services: Services, sources: Path) -> None:
    services.lifecycle.add_bundle(write_module(sources, "demo"), actor=ACTOR)
    enable(services, "demo")
    register(services, "other")
    stock(services, "demo")
    stock(services, "other", 1)

    done, _, op_id = services.lifecycle.remove("demo", actor=ACTOR)  # type: ignore[misc]

    assert done
    assert services.store.usage("demo").keys == 0
    assert services.store.get_entry("demo", "k0") is None
    assert services.store.get_entry("other", "k0") is not None
    operation = services.operations.get(op_id)
    assert "delete-data" in [step.name for step in operation.steps]
    assert "deleted the module's stored data: 3 keys" in operation.log_tail


def test_remove_with_keep_data_keeps_it(services: Services) -> None:
    register(services, "demo")
    stock(services, "demo")

    done, _, op_id = services.lifecycle.remove(  # type: ignore[misc]
        "demo", actor=ACTOR, keep_data=True
    )

    assert done
    with pytest.raises(NotFound):
        services.registry.get("demo")
    assert services.store.usage("demo").keys == 3
    assert "delete-data" not in [s.name for s in services.operations.get(op_id).steps]


def test_a_removal_that_fails_keeps_the_data(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(services, "demo")
    stock(services, "demo")
    real = services.registry.delete

    def failing(name: str, *, actor: str, dry_run: bool = False) -> Any:
        if not dry_run:
            raise OSError("the database went away")
        return real(name, actor=actor, dry_run=True)

    monkeypatch.setattr(services.registry, "delete", failing)

    with pytest.raises(OSError, match="went away"):
        services.lifecycle.remove("demo", actor=ACTOR)

    assert services.store.usage("demo").keys == 3
    assert services.registry.get("demo").status == Status.REMOVING


@pytest.mark.parametrize("keep", [False, True])
def test_the_dry_run_plan_counts_the_data_and_changes_nothing(
    services: Services, keep: bool
) -> None:
    register(services, "demo")
    stock(services, "demo")
    usage = services.store.usage("demo")

    plan = services.lifecycle.remove("demo", actor=ACTOR, dry_run=True, keep_data=keep)

    assert isinstance(plan, RemovalPlan)
    assert plan.model_dump(mode="json")["data"] == {
        "keys": 3,
        "bytes": usage.bytes,
        "kept": keep,
    }
    assert services.store.usage("demo") == usage
    assert services.registry.get("demo").status == Status.REGISTERED


def dead_owner() -> str:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}"


@pytest.mark.parametrize("keep", [False, True])
def test_recovery_completes_a_removal_with_its_data_choice(services: Services, keep: bool) -> None:
    """A removal interrupted before its rows went is finished at start-up, and deletes the
    data unless that removal was asked to keep it."""
    register(services, "demo")
    stock(services, "demo")
    services.registry.transition("demo", Status.REMOVING, actor=ACTOR)
    with services.db.write() as session:
        session.add(
            Operation(
                id=os.urandom(16).hex(),
                kind="remove",
                module="demo",
                status="running",
                actor=ACTOR,
                detail={"keepData": keep, "owner": dead_owner()},
                steps=[],
                log="",
            )
        )

    done = recover(services.lifecycle)

    with pytest.raises(NotFound):
        services.registry.get("demo")
    assert services.store.usage("demo").keys == (3 if keep else 0)
    assert any(line.startswith("demo: removal completed") for line in done)


# -- the quota ---------------------------------------------------------------------------------


def manifest(**runtime: int) -> Manifest:
    return Manifest.model_validate(
        {"name": "demo", "version": "1.0.0", "displayName": "Demo", "runtime": runtime}
    )


@pytest.mark.parametrize(
    ("runtime", "ceiling", "expected"),
    [
        ({}, 1024, 64),  # the default
        ({"storageMb": 1}, 1024, 1),
        ({"storageMb": 2048}, 1024, 1024),  # capped by the operator
        ({}, 16, 16),  # a ceiling under the default caps it too
        ({"storageMb": 4096}, 8192, 4096),
    ],
)
def test_storage_quota_bytes(
    settings: Settings, runtime: dict[str, int], ceiling: int, expected: int
) -> None:
    changed = settings.model_copy(update={"max_module_storage_mb": ceiling})
    assert storage_quota_bytes(manifest(**runtime), changed) == expected * MB
    assert quota_bytes(runtime.get("storageMb"), changed) == expected * MB
