"""Backup fixtures: an installation with content, empty restore targets, archive surgery."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from modhub.auth import credentials
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import (
    PG_ADMIN_URL,
    SECRET,
    _pg_connect,
    emptied,
    service_missing,
    session_database,
)

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "modules" / "hello"
QUOTA = 1024 * 1024


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords at argon2's lowest cost (users are made in most tests)."""
    monkeypatch.setattr(
        credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def installation(services: Services) -> Services:
    """Return started services holding a user, the hello module (its code as a bundle),
    a config secret and a store value."""
    services.auth.create_user("ops", "operator", "ops-password-long-enough")
    services.lifecycle.add_bundle(HELLO, actor="tester")
    services.registry.set_config("hello", {"greeting": "Hi", "apiKey": "sealed-1"}, actor="t")
    services.store.set("hello", "counter", {"n": 41}, quota_bytes=QUOTA)
    return services


def new_postgres() -> str:
    """Create an empty PostgreSQL database; return its URL."""
    import psycopg

    name = f"modhub_restore_{uuid.uuid4().hex[:12]}"
    try:
        with _pg_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres(url: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def backup_database() -> Iterator[tuple[str, list[str]]]:
    """Yield this session's PostgreSQL database for installations, and the tables tests write."""
    with session_database("modhub_backup") as database:
        yield database


@pytest.fixture
def postgres_url(backup_database: tuple[str, list[str]]) -> str:
    """Return the session's installation database, emptied as a fresh migration leaves it."""
    return emptied(backup_database)


@pytest.fixture(scope="session")
def restore_database() -> Iterator[str]:
    """Yield this session's PostgreSQL database for restores (dropped at the end)."""
    url = new_postgres()
    yield url
    drop_postgres(url)


@pytest.fixture
def empty_postgres(restore_database: str) -> Iterator[str]:
    """Yield an empty PostgreSQL database; whatever a test restored into it goes after."""
    yield restore_database
    import psycopg

    with psycopg.connect(restore_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture
def target(tmp_path: Path, installation: Services, request: pytest.FixtureRequest) -> Settings:
    """Return the settings of an empty restore target of the installation's database kind,
    with the installation's key."""
    url = None if installation.settings.embedded else request.getfixturevalue("empty_postgres")
    return Settings(data_dir=tmp_path / "restored", database_url=url, secret_key=SECRET)


def pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return [row[0] for row in rows]


def left_empty(settings: Settings) -> bool:
    """Return whether a refused restore left its target as it found it: nothing."""
    if settings.data_dir.exists() and any(settings.data_dir.iterdir()):
        return False
    if settings.embedded:
        return not (settings.data_dir / "modhub.db").exists()
    return pg_tables(settings.db_url) == []


def rewrite(path: Path, change: Callable[[str, bytes, dict[str, Any]], bytes | None]) -> None:
    """Rewrite the archive `path` member by member: `change(name, data, manifest)` returns
    the new bytes (None drops the member); the manifest is written after its members."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    manifest = json.loads(members[0][1])
    rewritten = []
    for name, data in members[1:]:
        new = change(name, data, manifest)
        if new is not None:
            rewritten.append((name, new))
    first = change("manifest.json", json.dumps(manifest).encode(), manifest)
    assert first is not None
    with tarfile.open(path, "w") as tar:
        for name, data in [("manifest.json", first), *rewritten]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
