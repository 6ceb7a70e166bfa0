"""Shared fixtures: a database on SQLite and PostgreSQL, services, an app, users, a server.

PostgreSQL tests skip with a reason when no server answers on 127.0.0.1:5432, except
under MODHUB_REQUIRE_SERVICES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modhub.api.app import create_app
from modhub.services import Services
from modhub.settings import Settings

PG_ADMIN_URL = os.environ.get("MODHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_SERVICES = os.environ.get("MODHUB_REQUIRE_SERVICES") == "1"
SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
ROLES = ("admin", "operator", "viewer")


def service_missing(reason: str) -> None:
    """Skip the test (fail on CI) because a service it needs is not running."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (MODHUB_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _pg_connect(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Yield the URL of a fresh PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"modhub_test_{uuid.uuid4().hex[:12]}"
    try:
        with _pg_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def session_database(prefix: str) -> Iterator[tuple[str, list[str]]]:
    """Yield a migrated PostgreSQL database kept for a whole session (one per xdist worker)
    and the tables tests write: `emptied` gives each test the state of a new database
    without a DROP DATABASE (seconds each) nor a migration per test."""
    import psycopg

    from modhub.db import Database, upgrade

    admin = PG_ADMIN_URL.rsplit("/", 1)[0]
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{admin}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    url = f"{admin}/{name}"
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        seeded = [t for t in tables if conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]
    yield url, [t for t in tables if t not in seeded]
    with psycopg.connect(f"{admin}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def emptied(database: tuple[str, list[str]]) -> str:
    """Empty the tables a session database's tests write (the seed rows stay); return its URL."""
    import psycopg

    url, written = database
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in written) + " RESTART IDENTITY")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a fresh database URL: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modhub.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Return settings with a temporary data dir and the test database."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=SECRET,
        admin_password=PASSWORD,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Yield started services on a migrated database."""
    from modhub.db import Database, upgrade

    if not settings.embedded:
        db = Database(settings.db_url)
        upgrade(db.engine)
        db.dispose()
    started = Services.start(settings)
    yield started
    started.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """Yield an in-process client of the API."""
    with TestClient(create_app(services=services)) as test_client:
        yield test_client


@pytest.fixture
def tokens(services: Services, client: TestClient) -> dict[str, str]:
    """Return an access token for a user of each built-in role (users admin/operator/viewer)."""
    out = {}
    for role in ROLES:
        services.auth.create_user(role, role, PASSWORD)
        response = client.post("/api/v1/auth/login", json={"username": role, "password": PASSWORD})
        assert response.status_code == 200, response.text
        out[role] = response.json()["accessToken"]
    return out


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A real `modhub serve` process."""

    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Return what the server printed so far."""
        return self.log.read_text(errors="replace")


def start_server(
    data_dir: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None
) -> LiveServer:
    """Start `modhub serve` on a free port and wait until /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(data_dir),
            "MODHUB_SECRET_KEY": SECRET,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
        }
    )
    if database_url:
        env["MODHUB_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"serve-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"modhub serve exited: {server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"modhub serve did not answer in 30 s: {server.output()}")


def stop_server(server: LiveServer) -> None:
    """Stop a server started by `start_server`."""
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def live_server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """Yield a real server on the test database, with user admin / PASSWORD."""
    if not database_url.startswith("sqlite"):
        from modhub.db import Database, upgrade

        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    server = start_server(tmp_path / "data", database_url)
    yield server
    stop_server(server)


def write_module_folder(
    root: Path,
    name: str,
    routes: list[dict[str, Any]],
    handlers: dict[str, str],
    **extra: Any,
) -> Path:
    """Write module `name` (1.0.0) under `root`: `routes`, a job `tick` (jobs/tick.py), the
    `handlers` files (path → text) and any `extra` manifest keys; return its folder."""
    folder = root / name
    data = {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "capabilities": {
            "api": {"routes": routes},
            "jobs": {"handlers": [{"name": "tick", "handler": "jobs/tick.py"}]},
        },
        **extra,
    }
    for path, text in handlers.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / "module.json").write_text(json.dumps(data))
    return folder
