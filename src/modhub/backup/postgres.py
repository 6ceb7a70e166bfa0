"""A PostgreSQL database in a backup: `pg_dump --format=custom`, restored by `pg_restore`.

The dump and the facts the manifest records (revision, key check value) come from one
snapshot: a repeatable-read transaction exports it and `pg_dump --snapshot` dumps it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from modhub.backup.archive import BackupError
from modhub.backup.facts import Facts

TIMEOUT_SECONDS = 3600


def _url(database_url: str) -> URL:
    return make_url(database_url).set(drivername="postgresql")


def _conninfo(database_url: str) -> str:
    """Return the libpq URI of `database_url`, with its password."""
    return _url(database_url).render_as_string(hide_password=False)


def where(database_url: str) -> str:
    """Return the database as shown to an operator (no password)."""
    url = _url(database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed: it is how modhub backs up and restores PostgreSQL "
            "(Debian: apt-get install postgresql-client-<the server's major version>)"
        )
    return path


def _connect(database_url: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(_conninfo(database_url), connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackupError(
            f"cannot connect to the database {where(database_url)} (MODHUB_DATABASE_URL): "
            f"{str(exc).strip()}"
        ) from None


def _major(tool: str) -> int:
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"(\d+)(?:\.\d+)*", result.stdout)
    if result.returncode != 0 or not found:
        raise BackupError(f"{tool} --version did not answer: {result.stderr.strip()}")
    return int(found.group(1))


def _run(argv: list[str], database_url: str) -> None:
    """Run a PostgreSQL client tool with the password in its environment, not argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    password = _url(database_url).password
    if password:
        env["PGPASSWORD"] = str(password)
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")


def dump(database_url: str, out: Path) -> Facts:
    """Dump the database to `out` (custom format, no owners or grants) and return the
    facts of the same snapshot."""
    pg_dump = _tool("pg_dump")
    with _connect(database_url) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        server = connection.info.server_version // 10000
        client = _major(pg_dump)
        if client < server:
            raise BackupError(
                f"pg_dump {client} cannot dump a PostgreSQL {server} server: install the "
                f"client of version {server} (Debian: apt-get install postgresql-client-"
                f"{server}) and put its pg_dump first on PATH"
            )
        row = connection.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        facts = _facts(connection)
        _run(
            [
                pg_dump,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--snapshot={row[0]}",
                f"--file={out}",
                f"--dbname={_url(database_url).set(password=None).render_as_string()}",
            ],
            database_url,
        )
        connection.rollback()
    out.chmod(0o600)
    return facts


def _facts(connection: psycopg.Connection[tuple[Any, ...]]) -> Facts:
    def exists(table: str) -> bool:
        row = connection.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()
        return row is not None and row[0] is not None

    revision = check = None
    if exists("alembic_version"):
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = str(row[0]) if row else None
    if exists("cluster_meta"):
        row = connection.execute(
            "SELECT value FROM cluster_meta WHERE key = 'secret_key_check'"
        ).fetchone()
        check = str(row[0]) if row else None
    unbundled: list[tuple[str, str]] = []
    if exists("module_versions"):
        has_bundles = connection.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'module_versions' AND column_name = 'bundle_sha256'"
        ).fetchone()
        query = (
            "SELECT m.name, v.version FROM module_versions v JOIN modules m ON m.id = v.module_id "
            "WHERE v.path IS NOT NULL" + (" AND v.bundle_sha256 IS NULL" if has_bundles else "")
        )
        unbundled = [(str(a), str(b)) for a, b in connection.execute(query + " ORDER BY 1, 2")]
    return Facts(revision, check, unbundled)


def tables(database_url: str) -> list[str]:
    """Return the tables of the database, outside PostgreSQL's own schemas."""
    with _connect(database_url) as connection:
        rows = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        ).fetchall()
    return [name if schema == "public" else f"{schema}.{name}" for schema, name in rows]


def restore(dump_file: Path, database_url: str) -> None:
    """Restore a dump into the (empty) database, all or nothing (one transaction)."""
    pg_restore = _tool("pg_restore")
    _run(
        [
            pg_restore,
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={_url(database_url).set(password=None).render_as_string()}",
            str(dump_file),
        ],
        database_url,
    )


def drop_tables(database_url: str) -> None:
    """Drop every table of the public schema (after a failed restore into an empty one)."""
    with _connect(database_url) as connection:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        if names:
            connection.execute(
                sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(name) for name in names)
                )
            )
