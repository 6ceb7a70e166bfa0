"""The embedded database in a backup: a copy made with SQLite's online backup API."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from modhub.backup.archive import BackupError
from modhub.backup.facts import Facts


def snapshot(database: Path, out: Path) -> Facts:
    """Copy the live database `database` to the new file `out`, consistent as of one moment
    while writers go on (SQLite's backup API, in one step under a read transaction); return
    the facts the copy holds."""
    if not database.is_file():
        raise BackupError(
            f"there is no database at {database}: nothing to back up (is MODHUB_DATA_DIR or "
            "--data-dir the data dir of the server?)"
        )
    os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with (
        contextlib.closing(sqlite3.connect(database, timeout=30)) as source,
        contextlib.closing(sqlite3.connect(out)) as copy,
    ):
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        return read_facts(copy)


def read_facts(connection: sqlite3.Connection) -> Facts:
    """Return the revision, key check value and versions without a bundle of a database."""
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    revision = None
    if "alembic_version" in tables:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    check = None
    if "cluster_meta" in tables:
        row = connection.execute(
            "SELECT value FROM cluster_meta WHERE key = 'secret_key_check'"
        ).fetchone()
        check = row[0] if row else None
    unbundled: list[tuple[str, str]] = []
    if "module_versions" in tables:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(module_versions)")}
        query = (
            "SELECT m.name, v.version FROM module_versions v JOIN modules m ON m.id = v.module_id "
            "WHERE v.path IS NOT NULL"
        )
        if "bundle_sha256" in columns:
            query += " AND v.bundle_sha256 IS NULL"
        unbundled = [(row[0], row[1]) for row in connection.execute(query + " ORDER BY 1, 2")]
    return Facts(revision, check, unbundled)


def place(copy: Path, database: Path) -> None:
    """Move the restored copy to where the settings put the database, mode 0600."""
    if database.exists():
        raise BackupError(f"the database file {database} exists already: restore refused")
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy.chmod(0o600)
    os.replace(copy, database)
