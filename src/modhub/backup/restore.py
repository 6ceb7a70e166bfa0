"""`modhub restore FILE`: a backup into an empty data dir (and an empty PostgreSQL database).

Nothing is written before the target is seen empty, the file read whole with every member
matching its manifest, and the key matching the backup's check value; a failure after that
takes back what the restore wrote, so the target is left as empty as it was. Environments
are not in a backup: each node builds them on first use (or at start with --prefetch).
"""

from __future__ import annotations

import contextlib
import hmac
import os
from pathlib import Path

from alembic.script import ScriptDirectory

from modhub.backup import postgres, sqlite
from modhub.backup.archive import BackupError, Manifest, remove_folder, unpack
from modhub.backup.snapshot import sqlite_path
from modhub.cluster.keycheck import check_value, verify_secret_key
from modhub.db import Database
from modhub.db.migrate import MIGRATIONS, upgrade
from modhub.errors import ConfigurationError
from modhub.lifecycle.bundle import extract_bundle
from modhub.lifecycle.bundles import BundleStore
from modhub.settings import KEY_FILE, Settings

STAGING = ".restore"
SHOWN = 8  # entries named when refusing a non-empty target


def restore_backup(settings: Settings, source: Path, *, key_file: Path | None = None) -> Manifest:
    """Restore the backup `source` into the empty target `settings` describe, migrate it to
    this version's schema, and return its manifest; raise BackupError when refused."""
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    if key_file is not None and settings.secret_key:
        raise BackupError("give the secret key once: --key-file or MODHUB_SECRET_KEY, not both")
    given = _read_key(key_file) if key_file else settings.secret_key
    origin = "--key-file" if key_file else "MODHUB_SECRET_KEY"
    _refuse_non_empty(settings)
    data_dir = settings.data_dir
    made = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    staging = data_dir / STAGING
    database_restored = False
    try:
        staging.mkdir(mode=0o700)
        manifest = unpack(source, staging)
        _check_compatible(manifest, settings)
        key = _key(manifest, staging, given, origin)
        if settings.embedded:
            sqlite.place(staging / "database" / "modhub.db", sqlite_path(settings))
        else:
            database_restored = True  # pg_restore is one transaction: all or nothing
            postgres.restore(staging / "database" / "modhub.dump", settings.db_url)
        if not settings.secret_key:
            _write_key(data_dir / KEY_FILE, key)
        _finish(settings, manifest, staging, key)
    except BaseException:
        if database_restored:
            with contextlib.suppress(Exception):  # the error that got us here is the one told
                postgres.drop_tables(settings.db_url)
        if settings.embedded:
            path = sqlite_path(settings)
            for leftover in (path, *(Path(f"{path}-{x}") for x in ("wal", "shm", "journal"))):
                leftover.unlink(missing_ok=True)
        if made:
            remove_folder(data_dir)
        else:  # it was empty: empty it again
            for child in data_dir.iterdir():
                remove_folder(child) if child.is_dir() else child.unlink()
        raise
    finally:
        remove_folder(staging)
    return manifest


def _refuse_non_empty(settings: Settings) -> None:
    data_dir = settings.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupError(f"the data dir {data_dir} is a file: restore refused")
    found = (
        sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir())
        if data_dir.exists()
        else []
    )
    if found:
        raise BackupError(
            f"the data dir {data_dir} is not empty: it holds {_listing(found)}; restore into "
            "an empty or new data dir (--data-dir or MODHUB_DATA_DIR)"
        )
    if settings.embedded:
        path = sqlite_path(settings)
        if path.exists():
            raise BackupError(f"the database file {path} exists already: restore refused")
        return
    tables = postgres.tables(settings.db_url)
    if tables:
        raise BackupError(
            f"the database {postgres.where(settings.db_url)} is not empty: it has "
            f"{len(tables)} table(s) ({_listing(tables)}); restore into an empty database "
            "(createdb a new one and point MODHUB_DATABASE_URL at it)"
        )


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _check_compatible(manifest: Manifest, settings: Settings) -> None:
    kind = "sqlite" if settings.embedded else "postgresql"
    if manifest.database != kind:
        raise BackupError(
            f"this backup holds a {manifest.database} database and the target is {kind} "
            "(MODHUB_DATABASE_URL): restore it into the same kind of database"
        )
    known = {script.revision for script in _scripts().walk_revisions()}
    if manifest.alembic_revision is not None and manifest.alembic_revision not in known:
        raise BackupError(
            f"this backup's database is at schema revision {manifest.alembic_revision}, newer "
            f"than this modhub knows (modhub {manifest.modhub_version} made it): restore it "
            "with that version of modhub or a newer one"
        )


def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def _read_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise BackupError(f"--key-file: cannot read {path}: {exc.strerror}") from None
    if len(key) < 32:
        raise BackupError(f"--key-file: {path} holds a key shorter than 32 characters")
    return key


def _key(manifest: Manifest, staging: Path, given: str | None, origin: str) -> str:
    """Return the key the restored installation will use, refusing one that does not match."""
    key = given
    if key is None and manifest.key_included:
        key = (staging / "key" / KEY_FILE).read_text().strip()
    if key is None:
        raise BackupError(
            "this backup does not include the secret key (it was made without --include-key):"
            " give the key of the installation it was made from, in MODHUB_SECRET_KEY or with"
            " --key-file (its data dir's secret.key)"
        )
    if manifest.key_check is not None and not hmac.compare_digest(
        check_value(key), manifest.key_check
    ):
        source = origin if given else "the key in this backup"
        raise BackupError(
            f"{source} is not the key this backup was made with (its check value differs):"
            " the restored config secrets could not be decrypted nor tokens verified; give"
            " the installation's own key"
        )
    return key


def _write_key(path: Path, key: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(key)


def _finish(settings: Settings, manifest: Manifest, staging: Path, key: str) -> None:
    """Migrate the restored database, check the key on it, and store in it the code of the
    versions whose code the backup carried as files."""
    db = Database(settings.db_url)
    try:
        upgrade(db.engine)
        try:
            verify_secret_key(db, key)
        except ConfigurationError as exc:
            raise BackupError(exc.detail) from None
        bundles = BundleStore(db, staging / "scratch")
        for item in manifest.code:
            name, version = item.split("@", 1)
            folder = extract_bundle(
                staging / "code" / f"{item}.tar.gz", staging / "unpacked" / item
            )
            bundles.attach(name, version, bundles.store(folder))
    finally:
        db.dispose()
