"""What the operator bounds: module limits under ceilings, and a data dir only modhub reads.

Every test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from modhub.errors import Conflict
from modhub.manifest import validate_manifest
from modhub.registry import Status
from modhub.services import Services
from modhub.settings import Settings
from tests.lifecycle.conftest import ACTOR, write_module
from tests.lifecycle.test_service import enable, upgrade


def with_runtime(sources: Path, name: str, version: str = "1.0.0", **runtime: int) -> Path:
    """Write a module folder whose manifest asks for `runtime` limits."""
    folder = write_module(sources, name, version)
    manifest = json.loads((folder / "module.json").read_text())
    manifest["runtime"] = runtime
    (folder / "module.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def started(settings: Settings) -> Iterator[Services]:
    services = Services.start(settings)
    yield services
    services.close()


@pytest.mark.parametrize(
    ("field", "value", "setting"),
    [
        ("memoryMb", 65_536, "MODHUB_MAX_MODULE_MEMORY_MB (1024)"),
        ("timeoutMs", 600_000, "MODHUB_MAX_MODULE_TIMEOUT_MS (300000)"),
        ("maxConcurrency", 1_000, "MODHUB_MAX_MODULE_CONCURRENCY (64)"),
        ("storageMb", 4_096, "MODHUB_MAX_MODULE_STORAGE_MB (1024)"),
    ],
)
def test_a_manifest_above_a_ceiling_is_valid_but_not_enabled(
    started: Services, sources: Path, field: str, value: int, setting: str
) -> None:
    folder = with_runtime(sources, "greedy", **{field: value})
    assert validate_manifest(json.loads((folder / "module.json").read_text())).valid
    started.lifecycle.add_bundle(folder, actor=ACTOR)
    with pytest.raises(Conflict) as refused:
        started.lifecycle.set_status("greedy", Status.ENABLED, actor=ACTOR)
    assert setting in refused.value.detail
    assert f"runtime.{field} {value}" in refused.value.detail
    assert refused.value.status == 409
    assert started.registry.get("greedy").status == Status.REGISTERED  # nothing was done


@contextmanager
def serving(settings: Settings, **update: object) -> Iterator[Services]:
    """Yield the services of `settings` changed by `update`, closed afterwards."""
    services = Services.start(settings.model_copy(update=update))
    try:
        yield services
    finally:
        services.close()


def memory_of(services: Services, name: str, code: Path) -> int:
    """Return the memory limit the worker of `name`'s active version would start with."""
    runtime = services.sync.runtime_for(services.registry.version_info(name)[0], code)
    assert runtime is not None
    return runtime.memory_mb


def test_an_operator_may_raise_a_ceiling(settings: Settings, sources: Path) -> None:
    with serving(settings, max_module_memory_mb=4096) as services:
        services.lifecycle.add_bundle(with_runtime(sources, "big", memoryMb=4096), actor=ACTOR)
        assert enable(services, "big").status == Status.ENABLED
        assert memory_of(services, "big", sources / "big-1.0.0") == 4096


def test_an_upgrade_above_a_ceiling_is_refused_and_the_old_version_stays(
    started: Services, sources: Path
) -> None:
    started.lifecycle.add_bundle(with_runtime(sources, "grows", memoryMb=512), actor=ACTOR)
    enable(started, "grows")
    started.lifecycle.add_bundle(
        with_runtime(sources, "grows", "2.0.0", memoryMb=8192), actor=ACTOR
    )
    with pytest.raises(Conflict, match="MODHUB_MAX_MODULE_MEMORY_MB"):
        upgrade(started, "grows", "2.0.0")
    module = started.registry.get("grows")
    assert (module.version, module.status) == ("1.0.0", Status.ENABLED)


def test_limits_enabled_before_a_ceiling_was_lowered_are_capped(
    settings: Settings, sources: Path
) -> None:
    with serving(settings, max_module_memory_mb=2048) as services:
        services.lifecycle.add_bundle(with_runtime(sources, "old", memoryMb=2048), actor=ACTOR)
        enable(services, "old")
    with serving(settings) as lowered:  # the default ceiling, 1024
        assert memory_of(lowered, "old", sources / "old-1.0.0") == 1024


def test_a_leftover_environment_does_not_break_the_next_install(
    started: Services, sources: Path
) -> None:
    # What a killed install's orphaned uv left behind: a half-made environment that no
    # row refers to, at the very path the next install builds.
    started.lifecycle.add_bundle(
        write_module(sources, "orphan", python=["mh-testlib==1.0.0"]), actor=ACTOR
    )
    leftover = started.lifecycle.layout.env("orphan", "1.0.0")
    (leftover / "bin").mkdir(parents=True)
    (leftover / "bin" / "python").write_text("half-made")
    assert enable(started, "orphan").status == Status.ENABLED
    assert (leftover / "bin" / "python").is_symlink()


def test_the_data_dir_and_the_database_are_modhubs_alone(settings: Settings) -> None:
    data = settings.data_dir
    data.mkdir(parents=True)
    data.chmod(0o755)  # as an older modhub, or an operator's mkdir, left it
    services = Services.start(settings)
    try:
        services.registry.list_modules()  # the database has been written and read
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        if settings.embedded:
            database = make_url(settings.db_url).database or ""
            made = [Path(f"{database}{end}") for end in ("", "-wal", "-shm")]
            assert made[0].exists()
            assert made[1].exists()
            for path in (p for p in made if p.exists()):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        services.close()
