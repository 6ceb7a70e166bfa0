"""Lifecycle fixtures: offline wheels, settings that install only from them, module folders.

Nothing here reaches the network: every install runs `uv pip install --offline` against a
folder of tiny wheels built once per test session (per xdist worker).
"""

from __future__ import annotations

import json
import stat
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from modhub.auth import credentials
from modhub.db import Database
from modhub.db.models import AuditEntry, Operation
from modhub.lifecycle.bundle import pack_folder
from modhub.settings import Settings
from tests.conftest import (
    PASSWORD,
    SECRET,
    emptied,
    session_database,
)
from tests.packages import build_wheel

TESTLIB = "mh-testlib"
TESTLIB_VERSIONS = ("1.0.0", "2.0.0")
ACTOR = "alice"


@pytest.fixture(scope="session")
def lifecycle_database() -> Iterator[tuple[str, list[str]]]:
    """Yield this session's PostgreSQL database and the tables its tests write."""
    with session_database("modhub_lifecycle") as database:
        yield database


@pytest.fixture
def postgres_url(lifecycle_database: tuple[str, list[str]]) -> str:
    """Return the session's PostgreSQL database, emptied as a fresh migration leaves it."""
    return emptied(lifecycle_database)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords at argon2's lowest cost: the `tokens` fixture creates and logs in three
    users per test, at about 0.3 s a hash in production settings."""
    monkeypatch.setattr(
        credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder holding the mh-testlib 1.0.0 and 2.0.0 wheels."""
    folder = tmp_path_factory.mktemp("lifecycle-wheels")
    folder.chmod(0o755)  # installs read it as the module's uid, as an operator's folder
    for version in TESTLIB_VERSIONS:
        build_wheel(folder, TESTLIB, version)
    return folder


@pytest.fixture
def settings(tmp_path: Path, database_url: str, wheels: Path) -> Settings:
    """Return settings whose installs read only the local wheel folder."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        admin_password=PASSWORD,
        pip_offline=True,
        pip_find_links=[str(wheels)],
        operation_wait_seconds=60,
    )


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """Return a folder to write module sources into, outside the data dir."""
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder


def write_module(
    root: Path,
    name: str,
    version: str = "1.0.0",
    *,
    python: list[str] | None = None,
    system: dict[str, str] | None = None,
    modules: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    handler: str = "handlers/main.py",
    write_handler: bool = True,
) -> Path:
    """Write a module folder `<root>/<name>-<version>` with one route and its handler."""
    folder = root / f"{name}-{version}"
    folder.mkdir(parents=True)
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "displayName": f"{name} {version}",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": handler}]}
        },
    }
    dependencies = {
        key: value
        for key, value in (("python", python), ("system", system), ("modules", modules))
        if value
    }
    if dependencies:
        data["dependencies"] = dependencies
    if config:
        data["config"] = {"schema": config}
    (folder / "module.json").write_text(json.dumps(data, indent=2), "utf-8")
    if write_handler:
        target = folder / handler
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f'def handler(request):\n    return {{"version": "{version}"}}\n')
    return folder


def make_zip(folder: Path, out: Path) -> Path:
    """Write the content of `folder` to the zip `out`."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return out


def as_bundle(folder: Path, kind: str) -> Path:
    """Return `folder` itself, or packed as a .zip or .tar.gz beside it."""
    if kind == "folder":
        return folder
    if kind == "zip":
        return make_zip(folder, folder.parent / f"{folder.name}.zip")
    return pack_folder(folder, folder.parent / f"{folder.name}.tar.gz")


def entries(folder: Path) -> list[str]:
    """Return the names in `folder` (none when it does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def is_read_only(root: Path) -> bool:
    """Tell whether no file or folder below `root` (included) can be written."""
    writable = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return all(not p.stat().st_mode & writable for p in [root, *root.rglob("*")])


def audit(db: Database, target: str | None = None, action: str | None = None) -> list[AuditEntry]:
    """Return the audit entries (about `target`, of `action`) in the order they were made."""
    query = select(AuditEntry).order_by(AuditEntry.id)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    with db.read() as session:
        return list(session.scalars(query))


def transitions(db: Database, target: str) -> list[tuple[str, str]]:
    """Return (from, to) of every recorded status change of `target`, in order."""
    return [(e.detail["from"], e.detail["to"]) for e in audit(db, target, "module.status")]


def operations(db: Database, module: str) -> list[Operation]:
    """Return the operations recorded for `module`, oldest first."""
    with db.read() as session:
        query = select(Operation).where(Operation.module == module).order_by(Operation.created_at)
        return list(session.scalars(query))


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "a condition") -> Any:
    """Return the first truthy result of `check`, polling until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
