"""`take_backup` and the `modhub backup` / `modhub restore` commands: what the file holds,
how it is written, and what is refused."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from modhub import __version__
from modhub.backup import BackupError, restore_backup, take_backup
from modhub.cli import app
from modhub.cluster.keycheck import check_value
from modhub.db.models import ModuleVersion
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import PG_ADMIN_URL, SECRET

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {info.name: info for info in tar.getmembers()}


def manifest_of(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        first = tar.next()
        assert first is not None
        assert first.name == "manifest.json"  # first: read before the rest
        handle = tar.extractfile(first)
        assert handle is not None
        data: dict[str, object] = json.loads(handle.read())
        return data


def test_the_file_names_what_it_holds_and_only_its_owner_reads_it(
    installation: Services, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "modhub.backup"
    old = os.umask(0)  # even so: never readable by others
    try:
        take_backup(installation.settings, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    manifest = manifest_of(path)
    kind = installation.db.dialect
    member = "database/modhub.db" if kind == "sqlite" else "database/modhub.dump"
    assert manifest["formatVersion"] == 1
    assert manifest["modhubVersion"] == __version__
    assert manifest["database"] == kind
    assert isinstance(manifest["alembicRevision"], str)
    assert str(manifest["createdAt"]).endswith("Z")
    assert manifest["keyCheck"] == check_value(SECRET)
    assert manifest["keyIncluded"] is False
    assert sorted(members(path)) == sorted(["manifest.json", member])
    assert SECRET.encode() not in path.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["modhub.backup"]


@SQLITE_ONLY
def test_the_key_is_in_the_file_only_when_asked(installation: Services, tmp_path: Path) -> None:
    path = tmp_path / "with-key.backup"
    take_backup(installation.settings, path, include_key=True)
    assert manifest_of(path)["keyIncluded"] is True
    with tarfile.open(path) as tar:
        handle = tar.extractfile("key/secret.key")
        assert handle is not None
        assert handle.read().decode() == SECRET


@SQLITE_ONLY
def test_a_failed_backup_leaves_the_previous_file_as_it_was(
    installation: Services, tmp_path: Path
) -> None:
    path = tmp_path / "modhub.backup"
    take_backup(installation.settings, path)
    before = path.read_bytes()
    wrong = installation.settings.model_copy(update={"secret_key": "x" * 40})
    with pytest.raises(BackupError, match="--include-key: this secret key is not the one"):
        take_backup(wrong, path, include_key=True)
    keyless = installation.settings.model_copy(update={"secret_key": None})
    with pytest.raises(BackupError, match="there is no secret key to include"):
        take_backup(keyless, path, include_key=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_data_dir_without_a_database_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "nothing-here", secret_key=SECRET)
    with pytest.raises(BackupError, match="there is no database at"):
        take_backup(settings, tmp_path / "b.backup")
    assert not (tmp_path / "b.backup").exists()
    assert not (tmp_path / "nothing-here" / "modhub.db").exists()  # not created by looking


def test_code_neither_stored_nor_here_is_named(installation: Services, tmp_path: Path) -> None:
    with installation.db.write() as session:
        session.execute(update(ModuleVersion).values(bundle_sha256=None))
    code = installation.lifecycle.layout.code("hello", "1.0.0")
    code.rename(tmp_path / "elsewhere")  # installed by another node
    manifest = take_backup(installation.settings, tmp_path / "b.backup")
    assert (manifest.code, manifest.code_missing) == ([], ["hello@1.0.0"])


def fake_tool(folder: Path, name: str, version_line: str) -> None:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    tool.chmod(0o755)


@POSTGRES_ONLY
def test_a_pg_dump_older_than_the_server_is_refused(
    installation: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tool(tmp_path / "bin", "pg_dump", "pg_dump (PostgreSQL) 9.6.24")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(BackupError, match=r"pg_dump 9 cannot dump a PostgreSQL \d+ server"):
        take_backup(installation.settings, tmp_path / "b.backup")
    assert not (tmp_path / "b.backup").exists()


@POSTGRES_ONLY
def test_no_pg_dump_is_refused_saying_what_to_install(
    installation: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump is not installed"):
        take_backup(installation.settings, tmp_path / "b.backup")


@SQLITE_ONLY
def test_the_commands_report_and_refuse(installation: Services, tmp_path: Path) -> None:
    settings = installation.settings
    env = {
        "MODHUB_DATA_DIR": str(settings.data_dir),
        "MODHUB_DATABASE_URL": settings.db_url,
        "MODHUB_SECRET_KEY": SECRET,
    }
    runner = CliRunner()
    path = tmp_path / "cli.backup"
    made = runner.invoke(app, ["backup", str(path)], env=env)
    assert made.exit_code == 0, made.output
    assert f"backup written to {path}: sqlite database at schema revision" in made.output
    assert "the secret key is not in this file" in made.output

    target = tmp_path / "restored"
    restore_env = {"MODHUB_SECRET_KEY": SECRET, "MODHUB_DATABASE_URL": None}
    done = runner.invoke(app, ["restore", str(path), "--data-dir", str(target)], env=restore_env)
    assert done.exit_code == 0, done.output
    assert "migrated to this version's schema" in done.output
    again = runner.invoke(app, ["restore", str(path), "--data-dir", str(target)], env=restore_env)
    assert again.exit_code == 1
    assert f"the data dir {target} is not empty: it holds modhub.db" in again.output


def test_a_postgres_database_that_does_not_answer_is_named(tmp_path: Path) -> None:
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + "/modhub_no_such_database"
    settings = Settings(data_dir=tmp_path / "d", database_url=missing, secret_key=SECRET)
    with pytest.raises(
        BackupError, match=r"cannot connect to the database .*modhub_no_such_database"
    ):
        take_backup(settings, tmp_path / "b.backup")
    with pytest.raises(
        BackupError, match=r"cannot connect to the database .*modhub_no_such_database"
    ):
        restore_backup(settings, _any_file(tmp_path))  # the target is checked first
    assert not settings.data_dir.exists()


def _any_file(tmp_path: Path) -> Path:
    path = tmp_path / "any.backup"
    path.write_bytes(b"x")
    return path
