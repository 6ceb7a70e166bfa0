"""The lifecycle through `services.lifecycle`: bundles, install, upgrade, rollback, remove.

Every test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modhub.db.models import Module, ModuleVersion
from modhub.errors import Conflict, InvalidInput, NotFound
from modhub.lifecycle.environment import InstallError, env_python
from modhub.registry import Status
from modhub.registry.types import ModuleDetail
from modhub.services import Services
from tests.lifecycle.conftest import (
    ACTOR,
    as_bundle,
    audit,
    entries,
    is_read_only,
    operations,
    transitions,
    write_module,
)

CONFIG_V1 = {
    "greeting": {"type": "string", "default": "hello"},
    "legacy": {"type": "string", "default": "old"},
    "token": {"type": "password"},
}
CONFIG_V2 = {
    "greeting": {"type": "string", "default": "hello"},
    "token": {"type": "password"},
    "color": {"type": "select", "options": ["blue", "red"], "default": "blue"},
}


def enable(services: Services, name: str) -> ModuleDetail:
    """Enable `name` through the lifecycle and return the module (the operation finished)."""
    done, detail, _ = services.lifecycle.set_status(name, Status.ENABLED, actor=ACTOR)
    assert done
    assert isinstance(detail, ModuleDetail)
    return detail


def upgrade(services: Services, name: str, version: str) -> ModuleDetail:
    """Upgrade `name` to `version` and return the module."""
    done, detail, _ = services.lifecycle.upgrade(name, version, actor=ACTOR)
    assert done
    assert isinstance(detail, ModuleDetail)
    return detail


def env_import(env: Path, module: str) -> str:
    """Import `module` with the environment's python and return its VERSION."""
    return subprocess.run(
        [str(env_python(env)), "-c", f"import {module}; print({module}.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_bundle_is_stored_read_only_with_hashes(
    services: Services, sources: Path, kind: str
) -> None:
    folder = write_module(sources, "demo")
    detail = services.lifecycle.add_bundle(as_bundle(folder, kind), actor=ACTOR)

    stored = services.settings.data_dir / "modules" / "demo" / "1.0.0"
    assert (detail.name, detail.version, detail.status) == ("demo", "1.0.0", Status.REGISTERED)
    assert detail.path == str(stored)
    assert (stored / "handlers" / "main.py").read_text() == (
        folder / "handlers" / "main.py"
    ).read_text()
    assert is_read_only(stored)
    _, row = services.registry.version_info("demo")
    assert row.files == {
        "handlers/main.py": sha256(folder / "handlers" / "main.py"),
        "module.json": sha256(folder / "module.json"),
    }
    assert entries(services.settings.data_dir / "staging") == []
    assert services.lifecycle.verify("demo") == []
    assert ("module.register", ACTOR) in [(e.action, e.actor) for e in audit(services.db, "demo")]


def test_invalid_bundle_is_refused_and_leaves_nothing(services: Services, sources: Path) -> None:
    folder = write_module(sources, "broken", write_handler=False)
    with pytest.raises(InvalidInput) as caught:
        services.lifecycle.add_bundle(as_bundle(folder, "zip"), actor=ACTOR)

    paths = [e["path"] for e in caught.value.errors or []]
    assert paths, caught.value.detail
    assert all(p.startswith("/manifest/") for p in paths), paths
    assert "/manifest/capabilities/api/routes/0/handler" in paths
    data = services.settings.data_dir
    assert entries(data / "modules") == []
    assert entries(data / "staging") == []
    with pytest.raises(NotFound):
        services.registry.get("broken")


def test_same_version_twice_conflicts_and_keeps_the_first(
    services: Services, sources: Path
) -> None:
    first = write_module(sources, "demo")
    services.lifecycle.add_bundle(first, actor=ACTOR)
    original = (first / "handlers" / "main.py").read_text()

    second = write_module(sources / "again", "demo")
    (second / "handlers" / "main.py").write_text("def handler(request):\n    return 'other'\n")
    with pytest.raises(Conflict, match="already registered"):
        services.lifecycle.add_bundle(as_bundle(second, "tar.gz"), actor=ACTOR)

    stored = services.settings.data_dir / "modules" / "demo" / "1.0.0"
    assert (stored / "handlers" / "main.py").read_text() == original
    assert is_read_only(stored)
    assert services.lifecycle.verify("demo") == []
    assert entries(services.settings.data_dir / "modules" / "demo") == ["1.0.0"]
    assert entries(services.settings.data_dir / "staging") == []


def test_verify_reports_a_modified_file(services: Services, sources: Path) -> None:
    services.lifecycle.add_bundle(write_module(sources, "demo"), actor=ACTOR)
    handler = services.settings.data_dir / "modules" / "demo" / "1.0.0" / "handlers" / "main.py"
    handler.chmod(0o644)
    handler.write_text("import os\nos.system('evil')\n")
    assert services.lifecycle.verify("demo") == [{"path": "handlers/main.py", "change": "modified"}]


# -- install ---------------------------------------------------------------------------------


def test_enabling_a_bundle_installs_it_then_enables_it(services: Services, sources: Path) -> None:
    services.lifecycle.add_bundle(write_module(sources, "demo"), actor=ACTOR)
    outcome = services.lifecycle.set_status("demo", Status.ENABLED, actor=ACTOR)
    assert isinstance(outcome, tuple)
    done, detail, op_id = outcome

    assert done
    assert isinstance(detail, ModuleDetail)
    assert detail.status == Status.ENABLED
    assert detail.last_error is None
    assert transitions(services.db, "demo") == [
        ("REGISTERED", "INSTALLING"),
        ("INSTALLING", "DISABLED"),
        ("DISABLED", "ENABLED"),
    ]
    env = services.settings.data_dir / "envs" / "demo" / "1.0.0"
    assert env_python(env).exists()
    operation = services.operations.get(op_id)
    assert (operation.kind, operation.status, operation.actor) == ("enable", "succeeded", ACTOR)
    assert [(s.name, s.status) for s in operation.steps] == [
        ("check-system", "succeeded"),
        ("create-environment", "succeeded"),
        ("set-status", "succeeded"),
    ]
    assert "Creating virtual environment" in operation.log_tail


def test_enabling_a_bare_manifest_needs_no_environment(services: Services) -> None:
    services.registry.register(
        {"name": "bare", "version": "1.0.0", "displayName": "Bare"}, actor=ACTOR
    )
    assert enable(services, "bare").status == Status.ENABLED
    assert transitions(services.db, "bare")[-1] == ("DISABLED", "ENABLED")
    assert entries(services.settings.data_dir / "envs") == []


def test_modules_get_their_own_conflicting_requirements(services: Services, sources: Path) -> None:
    for name, version in (("old-lib", "1.0.0"), ("new-lib", "2.0.0")):
        folder = write_module(sources, name, python=[f"mh-testlib=={version}"])
        services.lifecycle.add_bundle(folder, actor=ACTOR)
        assert enable(services, name).status == Status.ENABLED

    envs = services.settings.data_dir / "envs"
    assert env_import(envs / "old-lib" / "1.0.0", "mh_testlib") == "1.0.0"
    assert env_import(envs / "new-lib" / "1.0.0", "mh_testlib") == "2.0.0"


def test_cascade_installs_dependencies_first(services: Services, sources: Path) -> None:
    lifecycle = services.lifecycle
    lifecycle.add_bundle(write_module(sources, "base"), actor=ACTOR)
    lifecycle.add_bundle(write_module(sources, "app", modules={"base": "^1.0.0"}), actor=ACTOR)
    with pytest.raises(Conflict, match="base is REGISTERED"):
        lifecycle.set_status("app", Status.ENABLED, actor=ACTOR)

    outcome = lifecycle.set_status("app", Status.ENABLED, actor=ACTOR, cascade=True)

    assert isinstance(outcome, tuple)
    assert services.registry.get("base").status == Status.ENABLED
    assert services.registry.get("app").status == Status.ENABLED
    assert entries(services.settings.data_dir / "envs") == ["app", "base"]
    enabled = [
        e.target for e in audit(services.db, action="module.status") if e.detail["to"] == "ENABLED"
    ]
    assert enabled == ["base", "app"]


def assert_install_failed(services: Services, name: str, *needles: str) -> None:
    """Assert `name` is back to REGISTERED with a lastError holding `needles`, env gone."""
    module = services.registry.get(name)
    assert module.status == Status.REGISTERED
    assert module.last_error is not None
    for needle in needles:
        assert needle in module.last_error, module.last_error
    assert not (services.settings.data_dir / "envs" / name / module.version).exists()
    assert transitions(services.db, name) == [
        ("REGISTERED", "INSTALLING"),
        ("INSTALLING", "REGISTERED"),
    ]
    assert audit(services.db, name, "module.status")[-1].detail["error"] == module.last_error
    (operation,) = operations(services.db, name)
    assert operation.status == "failed"
    assert operation.error


def test_unmet_system_requirement_fails_the_install(services: Services, sources: Path) -> None:
    folder = write_module(sources, "ancient", system={"python": "<3.0"})
    services.lifecycle.add_bundle(folder, actor=ACTOR)
    with pytest.raises(Conflict, match="system requirements not met"):
        services.lifecycle.set_status("ancient", Status.ENABLED, actor=ACTOR)
    assert_install_failed(services, "ancient", "python", platform.python_version(), "<3.0")


def test_uninstallable_requirement_fails_the_install(services: Services, sources: Path) -> None:
    folder = write_module(sources, "greedy", python=["mh-does-not-exist>=1"])
    services.lifecycle.add_bundle(folder, actor=ACTOR)
    with pytest.raises(InstallError):
        services.lifecycle.set_status("greedy", Status.ENABLED, actor=ACTOR)
    assert_install_failed(services, "greedy", "install failed", "mh-does-not-exist")


# -- upgrade and rollback --------------------------------------------------------------------


@pytest.mark.parametrize("start", [Status.ENABLED, Status.DISABLED])
def test_upgrade_carries_config_and_rollback_returns(
    services: Services, sources: Path, start: Status
) -> None:
    lifecycle, registry = services.lifecycle, services.registry
    data = services.settings.data_dir
    lifecycle.add_bundle(write_module(sources, "demo", config=CONFIG_V1), actor=ACTOR)
    enable(services, "demo")
    if start == Status.DISABLED:
        lifecycle.set_status("demo", Status.DISABLED, actor=ACTOR)
    registry.set_config("demo", {"greeting": "hi there", "token": "s3cret"}, actor=ACTOR)
    lifecycle.add_bundle(
        write_module(sources, "demo", "1.1.0", config=CONFIG_V2, python=["mh-testlib==2.0.0"]),
        actor=ACTOR,
    )
    assert registry.get("demo").version == "1.0.0"  # a new version waits for the upgrade

    detail = upgrade(services, "demo", "1.1.0")

    assert (detail.version, detail.status, detail.last_error) == ("1.1.0", start, None)
    assert detail.previous_version == "1.0.0"
    assert detail.path == str(data / "modules" / "demo" / "1.1.0")
    assert detail.config == {"greeting": "hi there", "token": "********", "color": "blue"}
    assert registry.config_for_code("demo")["token"] == "s3cret"
    assert entries(data / "envs" / "demo") == ["1.0.0", "1.1.0"]  # the old one, for rollback
    assert env_import(data / "envs" / "demo" / "1.1.0", "mh_testlib") == "2.0.0"
    assert transitions(services.db, "demo")[-2:] == [(start, "UPDATING"), ("UPDATING", start)]
    (entry,) = audit(services.db, "demo", "module.upgrade")
    assert (entry.actor, entry.detail) == (ACTOR, {"from": "1.0.0", "to": "1.1.0"})

    done, back, _ = lifecycle.rollback("demo", actor=ACTOR)
    assert done
    assert isinstance(back, ModuleDetail)
    assert (back.version, back.status, back.previous_version) == ("1.0.0", start, "1.1.0")
    assert back.path == str(data / "modules" / "demo" / "1.0.0")
    assert back.config == {"greeting": "hi there", "token": "********", "legacy": "old"}
    assert registry.config_for_code("demo")["token"] == "s3cret"
    assert len(audit(services.db, "demo", "module.rollback")) == 1


def test_rollback_without_a_previous_version_conflicts(services: Services) -> None:
    services.registry.register(
        {"name": "solo", "version": "1.0.0", "displayName": "S"}, actor=ACTOR
    )
    with pytest.raises(Conflict, match="no previous version"):
        services.lifecycle.rollback("solo", actor=ACTOR)


def register(services: Services, name: str, version: str = "1.0.0", **deps: str) -> None:
    """Register a bare manifest of `name` depending on the modules in `deps`."""
    data: dict[str, Any] = {"name": name, "version": version, "displayName": name}
    if deps:
        data["dependencies"] = {"modules": {k.replace("_", "-"): v for k, v in deps.items()}}
    services.registry.register(data, actor=ACTOR)


def test_upgrade_refused_when_a_dependent_rejects_the_new_version(services: Services) -> None:
    register(services, "base")
    register(services, "base", "2.0.0")
    register(services, "app", base="^1.0.0")
    with pytest.raises(Conflict) as caught:
        services.lifecycle.upgrade("base", "2.0.0", actor=ACTOR)
    assert "app needs base ^1.0.0" in caught.value.detail
    assert caught.value.extra["dependents"] == ["app needs base ^1.0.0"]
    assert services.registry.get("base").version == "1.0.0"
    assert operations(services.db, "base") == []


def test_upgrade_refused_when_a_new_dependency_is_missing(services: Services) -> None:
    register(services, "base")
    register(services, "base", "1.1.0", core_auth="^1.0.0")
    with pytest.raises(Conflict) as caught:
        services.lifecycle.upgrade("base", "1.1.0", actor=ACTOR)
    assert "core-auth is not registered" in caught.value.detail
    assert services.registry.get("base").version == "1.0.0"


def test_failed_upgrade_keeps_the_old_version_running(services: Services, sources: Path) -> None:
    lifecycle, data = services.lifecycle, services.settings.data_dir
    lifecycle.add_bundle(write_module(sources, "demo", config=CONFIG_V1), actor=ACTOR)
    enable(services, "demo")
    services.registry.set_config("demo", {"token": "s3cret"}, actor=ACTOR)
    before = services.registry.get("demo")
    lifecycle.add_bundle(
        write_module(sources, "demo", "1.1.0", python=["mh-testlib==9.9.9"]), actor=ACTOR
    )

    with pytest.raises(InstallError):
        lifecycle.upgrade("demo", "1.1.0", actor=ACTOR)

    after = services.registry.get("demo")
    assert (after.version, after.status, after.previous_version) == ("1.0.0", "ENABLED", None)
    assert after.path == before.path
    assert after.config == before.config
    assert after.last_error is not None
    assert "upgrade to 1.1.0 failed" in after.last_error
    assert "mh-testlib" in after.last_error
    assert entries(data / "envs" / "demo") == ["1.0.0"]
    assert transitions(services.db, "demo")[-2:] == [
        ("ENABLED", "UPDATING"),
        ("UPDATING", "ENABLED"),
    ]
    assert audit(services.db, "demo", "module.upgrade") == []
    assert operations(services.db, "demo")[-1].status == "failed"


# -- removal ---------------------------------------------------------------------------------


def test_remove_deletes_rows_files_and_environments(services: Services, sources: Path) -> None:
    lifecycle, data = services.lifecycle, services.settings.data_dir
    lifecycle.add_bundle(write_module(sources, "demo"), actor=ACTOR)
    enable(services, "demo")
    lifecycle.add_bundle(write_module(sources, "demo", "1.1.0"), actor=ACTOR)
    upgrade(services, "demo", "1.1.0")
    assert entries(data / "modules" / "demo") == ["1.0.0", "1.1.0"]

    outcome = lifecycle.remove("demo", actor=ACTOR)
    assert isinstance(outcome, tuple)
    done, result, op_id = outcome

    assert done
    assert result is None
    with pytest.raises(NotFound):
        services.registry.get("demo")
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Module)) == 0
        assert session.scalar(select(func.count()).select_from(ModuleVersion)) == 0
    assert entries(data / "modules") == []
    assert entries(data / "envs") == []
    assert transitions(services.db, "demo")[-2:] == [
        ("ENABLED", "DISABLED"),
        ("DISABLED", "REMOVING"),
    ]
    (entry,) = audit(services.db, "demo", "module.remove")
    assert entry.actor == ACTOR
    assert services.operations.get(op_id).status == "succeeded"


def test_remove_is_refused_while_dependents_exist(services: Services, sources: Path) -> None:
    data = services.settings.data_dir
    services.lifecycle.add_bundle(write_module(sources, "base"), actor=ACTOR)
    enable(services, "base")
    register(services, "app", base="^1.0.0")

    with pytest.raises(Conflict) as caught:
        services.lifecycle.remove("base", actor=ACTOR)

    assert caught.value.extra["dependents"] == ["app"]
    assert services.registry.get("base").status == Status.ENABLED
    assert entries(data / "modules" / "base") == ["1.0.0"]
    assert entries(data / "envs" / "base") == ["1.0.0"]
    assert operations(services.db, "base")[-1].kind == "enable"  # no remove operation started


def test_remove_dry_run_changes_nothing(services: Services, sources: Path) -> None:
    services.lifecycle.add_bundle(write_module(sources, "demo"), actor=ACTOR)
    plan = services.lifecycle.remove("demo", actor=ACTOR, dry_run=True)
    assert not isinstance(plan, tuple)
    assert [(s.module, s.to) for s in plan.steps] == [("demo", None)]
    assert services.registry.get("demo").status == Status.REGISTERED
    assert entries(services.settings.data_dir / "modules") == ["demo"]


def test_verify_of_an_unknown_module_is_not_found(services: Services) -> None:
    with pytest.raises(NotFound):
        services.lifecycle.verify("nobody")


@pytest.mark.parametrize("allowed", [False, True])
def test_a_bundle_with_a_url_requirement_follows_the_operators_setting(
    settings: Any, sources: Path, allowed: bool
) -> None:
    url = "mh-remote @ https://packages.example/mh_remote-1.0-py3-none-any.whl"
    services = Services.start(settings.model_copy(update={"pip_allow_direct_references": allowed}))
    try:
        folder = write_module(sources, "remote", python=[url])
        if allowed:
            assert services.lifecycle.add_bundle(folder, actor=ACTOR).name == "remote"
        else:
            with pytest.raises(InvalidInput) as refused:
                services.lifecycle.add_bundle(folder, actor=ACTOR)
            assert [e["code"] for e in refused.value.errors or []] == ["direct_reference"]
    finally:
        services.close()
