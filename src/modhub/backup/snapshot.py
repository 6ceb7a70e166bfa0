"""`modhub backup FILE`: one consistent snapshot of a running installation in one file."""

from __future__ import annotations

import hmac
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from modhub import __version__
from modhub.backup import postgres, sqlite
from modhub.backup.archive import BackupError, Manifest, remove_folder, write_archive
from modhub.cluster.keycheck import check_value
from modhub.lifecycle.bundles import pack_tree
from modhub.lifecycle.layout import Layout
from modhub.settings import KEY_FILE, Settings


def sqlite_path(settings: Settings) -> Path:
    """Return the file of the embedded database."""
    name = make_url(settings.db_url).database
    if not name or name == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(name).absolute()


def existing_key(settings: Settings) -> str | None:
    """Return the secret key the server uses (the setting, or the data dir's key file),
    without ever generating one."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / KEY_FILE
    return path.read_text().strip() if path.is_file() else None


def take_backup(settings: Settings, target: Path, *, include_key: bool = False) -> Manifest:
    """Write a backup of the installation `settings` describe to `target` (replaced
    atomically, mode 0600) while its servers run; return its manifest."""
    target = target.absolute()
    if target.is_dir():
        raise BackupError(f"{target} is a folder: name the backup file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".modhub-backup-"))  # 0700
    try:
        files: dict[str, Path] = {}
        if settings.embedded:
            kind, member = "sqlite", "database/modhub.db"
            facts = sqlite.snapshot(sqlite_path(settings), work / "modhub.db")
            files[member] = work / "modhub.db"
        else:
            kind, member = "postgresql", "database/modhub.dump"
            facts = postgres.dump(settings.db_url, work / "modhub.dump")
            files[member] = work / "modhub.dump"
        if include_key:
            files["key/secret.key"] = _key_member(settings, facts.key_check, work)
        layout = Layout(settings.data_dir)
        code, missing = [], []
        for name, version in facts.unbundled:
            folder = layout.code(name, version)
            if not folder.is_dir():
                missing.append(f"{name}@{version}")
                continue
            pack = work / f"code-{name}@{version}.tar.gz"
            with open(os.open(pack, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                pack_tree(folder, out)
            files[f"code/{name}@{version}.tar.gz"] = pack
            code.append(f"{name}@{version}")
        manifest = Manifest(
            modhub_version=__version__,
            database=kind,
            alembic_revision=facts.revision,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            key_check=facts.key_check,
            key_included=include_key,
            code=code,
            code_missing=missing,
        )
        write_archive(target, manifest, files)
        return manifest
    finally:
        remove_folder(work)


def _key_member(settings: Settings, check: str | None, work: Path) -> Path:
    key = existing_key(settings)
    if key is None:
        raise BackupError(
            f"--include-key: there is no secret key to include (MODHUB_SECRET_KEY is unset "
            f"and {settings.data_dir / KEY_FILE} does not exist)"
        )
    if check is not None and not hmac.compare_digest(check_value(key), check):
        raise BackupError(
            "--include-key: this secret key is not the one the database was set up with "
            "(its check value differs): the backup would not restore; use the servers' key"
        )
    path = work / "secret.key"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(key)
    return path
