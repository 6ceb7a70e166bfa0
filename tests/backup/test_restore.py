"""`restore_backup`: what it brings back, and every refusal leaving the target as it was."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from modhub.backup import BackupError, restore_backup, take_backup
from modhub.db import Database
from modhub.db.migrate import is_current, upgrade
from modhub.db.models import Bundle, Module, ModuleVersion, User
from modhub.keys import SecretBox
from modhub.lifecycle.bundles import BundleStore
from modhub.registry import Registry
from modhub.services import Services
from modhub.settings import Settings
from modhub.store import ModuleStore
from tests.backup.conftest import drop_postgres, left_empty, new_postgres, pg_tables, rewrite
from tests.conftest import SECRET

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
OTHER_KEY = "another-secret-key-that-is-long-enough-000000"


def backed_up(installation: Services, tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "backups" / "modhub.backup"
    take_backup(installation.settings, path, **options)
    return path


def test_a_restore_brings_back_users_modules_bundles_secrets_and_stores(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    manifest = restore_backup(target, backed_up(installation, tmp_path))
    assert manifest.database == installation.db.dialect
    db = Database(target.db_url)
    try:
        assert is_current(db.engine)
        with db.read() as session:
            assert session.scalar(select(User.role).where(User.username == "ops")) == "operator"
            sha = session.scalar(
                select(ModuleVersion.bundle_sha256).join(Module).where(Module.name == "hello")
            )
        assert sha is not None
        assert BundleStore(db, tmp_path / "scratch").has(sha)
        registry = Registry(db, SecretBox(SECRET))
        assert registry.config_for_code("hello") == {"greeting": "Hi", "apiKey": "sealed-1"}
        store = ModuleStore(db)
        try:
            entry = store.get_entry("hello", "counter")
            assert entry is not None
            assert entry.value == {"n": 41}
        finally:
            store.close()
    finally:
        db.dispose()
    assert sorted(p.name for p in target.data_dir.iterdir()) == (
        ["modhub.db"] if target.embedded else []  # no key file: the key is in the setting
    )


@SQLITE_ONLY  # the key's handling does not depend on the database
def test_the_key_included_is_restored_into_the_data_dir(
    installation: Services, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path, include_key=True)
    target = Settings(data_dir=tmp_path / "restored")  # no MODHUB_SECRET_KEY
    manifest = restore_backup(target, path)
    assert manifest.key_included
    key_file = target.data_dir / "secret.key"
    assert key_file.read_text() == SECRET
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert target.data_dir.stat().st_mode & 0o777 == 0o700
    services = Services.start(target)  # the key check passes with the restored key file
    try:
        assert services.registry.config_for_code("hello")["apiKey"] == "sealed-1"
    finally:
        services.close()


@SQLITE_ONLY  # the key's handling does not depend on the database
def test_a_key_file_given_is_written_into_the_data_dir(
    installation: Services, tmp_path: Path
) -> None:
    key_file = tmp_path / "old-secret.key"
    key_file.write_text(SECRET + "\n")
    target = Settings(data_dir=tmp_path / "restored")
    restore_backup(target, backed_up(installation, tmp_path), key_file=key_file)
    assert (target.data_dir / "secret.key").read_text() == SECRET


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (OTHER_KEY, "MODHUB_SECRET_KEY is not the key this backup was made with"),
        (None, "this backup does not include the secret key"),
    ],
)
def test_a_wrong_or_missing_key_is_refused_and_nothing_is_written(
    installation: Services, target: Settings, tmp_path: Path, key: str | None, message: str
) -> None:
    path = backed_up(installation, tmp_path)
    wrong = target.model_copy(update={"secret_key": key})
    with pytest.raises(BackupError, match=message):
        restore_backup(wrong, path)
    assert left_empty(wrong)
    assert not wrong.data_dir.exists()  # it did not exist: it does not now


@SQLITE_ONLY  # the key's handling does not depend on the database
def test_a_wrong_key_file_is_refused(installation: Services, tmp_path: Path) -> None:
    path = backed_up(installation, tmp_path, include_key=True)
    key_file = tmp_path / "wrong.key"
    key_file.write_text(OTHER_KEY)
    target = Settings(data_dir=tmp_path / "restored")
    with pytest.raises(BackupError, match="--key-file is not the key"):
        restore_backup(target, path, key_file=key_file)
    assert left_empty(target)


def test_a_non_empty_data_dir_is_refused_naming_what_it_holds(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    target.data_dir.mkdir()
    (target.data_dir / "notes.txt").write_text("mine")
    (target.data_dir / "modules").mkdir()
    with pytest.raises(BackupError, match=r"is not empty: it holds modules/, notes.txt"):
        restore_backup(target, path)
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["modules", "notes.txt"]
    assert (target.data_dir / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_non_empty_postgres_database_is_refused_naming_its_tables(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    db = Database(target.db_url)
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE keep_me (id integer)"))
    db.dispose()
    with pytest.raises(BackupError, match=r"is not empty: it has 1 table\(s\) \(keep_me\)"):
        restore_backup(target, path)
    assert pg_tables(target.db_url) == ["keep_me"]
    assert not target.data_dir.exists()


def test_an_empty_data_dir_made_by_the_operator_is_used_and_emptied_again_on_refusal(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    target.data_dir.mkdir()
    wrong = target.model_copy(update={"secret_key": OTHER_KEY})
    with pytest.raises(BackupError):
        restore_backup(wrong, path)
    assert target.data_dir.is_dir()
    assert left_empty(target)
    restore_backup(target, path)  # the same target, the right key: restored
    assert not left_empty(target)


def test_a_corrupt_member_is_refused(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)

    def flip(name: str, data: bytes, _manifest: dict[str, Any]) -> bytes:
        if not name.startswith("database/"):
            return data
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    rewrite(path, flip)
    with pytest.raises(BackupError, match=r"member database/modhub\.\w+ does not match"):
        restore_backup(target, path)
    assert left_empty(target)


def test_a_truncated_file_is_refused(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    for size in (path.stat().st_size // 2, 700, 0):
        with path.open("r+b") as handle:
            handle.truncate(size)
        with pytest.raises(BackupError, match=r"truncated or corrupt|not a readable|is empty"):
            restore_backup(target, path)
        assert left_empty(target)


def test_a_member_dropped_is_refused(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    rewrite(path, lambda name, data, _m: None if name.startswith("database/") else data)
    with pytest.raises(BackupError, match=r"it lacks database/modhub"):
        restore_backup(target, path)
    assert left_empty(target)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("formatVersion", 2, "format version 2, made by modhub 0.1.0; this modhub reads"),
        ("alembicRevision", "0999", "schema revision 0999, newer than this modhub knows"),
        ("database", "oracle", "database 'oracle' is unknown"),
        ("code", ["../../x@1.0.0"], "code '../../x@1.0.0' is not one of its members"),
        ("keyIncluded", True, "keyIncluded does not match its members"),
        ("keyCheck", "hmac-sha256:v1:" + "0" * 64, "is not the key this backup was made with"),
    ],
)
def test_a_backup_this_version_cannot_restore_is_refused(
    installation: Services,
    target: Settings,
    tmp_path: Path,
    field: str,
    value: Any,
    message: str,
) -> None:
    path = backed_up(installation, tmp_path)

    def edit(name: str, data: bytes, manifest: dict[str, Any]) -> bytes:
        if name == "manifest.json":
            manifest[field] = value
            return json.dumps(manifest).encode()
        return data

    rewrite(path, edit)
    with pytest.raises(BackupError, match=message):
        restore_backup(target, path)
    assert left_empty(target)


def test_a_backup_of_the_other_database_kind_is_refused(
    installation: Services, tmp_path: Path, empty_postgres: str
) -> None:
    path = backed_up(installation, tmp_path)
    other = None if not installation.settings.embedded else empty_postgres
    target = Settings(data_dir=tmp_path / "restored", database_url=other, secret_key=SECRET)
    kind = installation.db.dialect
    with pytest.raises(BackupError, match=f"holds a {kind} database and the target is"):
        restore_backup(target, path)
    assert left_empty(target)


def test_a_file_that_is_no_backup_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    target = Settings(data_dir=tmp_path / "restored", secret_key=SECRET)
    with pytest.raises(BackupError, match=r"not a modhub backup|truncated or corrupt"):
        restore_backup(target, junk)
    assert not target.data_dir.exists()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_backup_from_an_older_schema_is_restored_and_migrated(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if kind == "sqlite" else new_postgres()
    try:
        old = Database(url)
        upgrade(old.engine, "0005")  # before the cluster tables (no key check value yet)
        with old.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, active, created_at) "
                    "VALUES ('old-timer', 'x', 'viewer', true, '2025-01-01 00:00:00')"
                )
            )
        old.dispose()
        path = tmp_path / "old.backup"
        manifest = take_backup(Settings(data_dir=tmp_path / "old", database_url=url), path)
    finally:
        if kind == "postgresql":
            drop_postgres(url)
    assert (manifest.alembic_revision, manifest.key_check) == ("0005", None)
    target_url = None if kind == "sqlite" else request.getfixturevalue("empty_postgres")
    target = Settings(data_dir=tmp_path / "restored", database_url=target_url, secret_key=SECRET)
    restore_backup(target, path)
    db = Database(target.db_url)
    try:
        assert is_current(db.engine)
        with db.read() as session:
            assert session.scalar(select(User.role).where(User.username == "old-timer"))
    finally:
        db.dispose()
    Services.start(target).close()  # the key check value is written on the way


def test_code_installed_before_bundles_were_stored_travels_as_files(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    db = installation.db
    with db.write() as session:  # as a version installed before migration 0006
        session.execute(update(ModuleVersion).values(bundle_sha256=None))
    assert installation.lifecycle.bundles.delete_unreferenced() == 1
    manifest = take_backup(installation.settings, tmp_path / "b.backup")
    assert (manifest.code, manifest.code_missing) == (["hello@1.0.0"], [])
    restore_backup(target, tmp_path / "b.backup")
    restored = Database(target.db_url)
    try:
        with restored.read() as session:
            sha = session.scalar(select(ModuleVersion.bundle_sha256))
            assert sha is not None
            assert session.scalar(select(Bundle.sha256)) == sha
    finally:
        restored.dispose()


@SQLITE_ONLY
def test_a_backup_compressed_by_the_operator_restores(
    installation: Services, target: Settings, tmp_path: Path
) -> None:
    path = backed_up(installation, tmp_path)
    packed = tmp_path / "modhub.backup.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert restore_backup(target, packed).database == "sqlite"
