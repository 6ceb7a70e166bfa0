"""Every node of a cluster holds the same secret key: the database keeps a check value, and
a node (or a restarted data dir) with another key refuses to start, on SQLite and
PostgreSQL, through `Services.start` and a real `modhub serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select

from modhub.cluster.keycheck import CHECK_KEY, check_value, verify_secret_key
from modhub.db import Database, upgrade
from modhub.db.models import ClusterMeta
from modhub.errors import ConfigurationError
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import PASSWORD, SECRET, free_port, start_server, stop_server

OTHER = "another-secret-key-that-is-long-enough-9876543210"
REFUSAL = "MODHUB_SECRET_KEY differs from the one the cluster's database was set up with"


def _settings(base: Settings, secret: str, data_dir: Path | None = None) -> Settings:
    return base.model_copy(update={"secret_key": secret, "data_dir": data_dir or base.data_dir})


def _stored(db: Database) -> str | None:
    with db.read() as session:
        return session.scalar(select(ClusterMeta.value).where(ClusterMeta.key == CHECK_KEY))


def test_the_first_start_stores_a_check_value_that_is_not_the_key(services: Services) -> None:
    stored = _stored(services.db)
    assert stored == check_value(SECRET)
    assert SECRET not in stored
    assert check_value(OTHER) != stored
    # The same key gives the same value: a restart with it starts.
    assert verify_secret_key(services.db, SECRET) is False


def test_a_node_with_another_key_refuses_to_start(services: Services, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Services.start(_settings(services.settings, OTHER, tmp_path / "node-b"))
    assert REFUSAL in refused.value.detail
    assert OTHER not in refused.value.detail
    assert SECRET not in refused.value.detail
    assert _stored(services.db) == check_value(SECRET)  # the cluster's value stays
    # The right key still starts another node.
    again = Services.start(_settings(services.settings, SECRET, tmp_path / "node-c"))
    again.close()


def _race(db: Database, keys: list[str]) -> tuple[list[bool], list[str]]:
    """Verify every key from its own thread at once; return who wrote, and who was refused."""
    barrier = threading.Barrier(len(keys))
    wrote: list[bool] = []
    refused: list[str] = []

    def start(key: str) -> None:
        barrier.wait()
        try:
            wrote.append(verify_secret_key(db, key))
        except ConfigurationError:
            refused.append(key)

    threads = [threading.Thread(target=start, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wrote, refused


def test_nodes_starting_at_once_agree_on_one_key(settings: Settings) -> None:
    """Racing first starts: one value is written; with two keys, one of them is refused."""
    db = Database(settings.db_url)
    settings.prepare_data_dir()
    upgrade(db.engine)
    try:
        for keys in ([SECRET] * 6, [SECRET, OTHER] * 3):
            with db.write() as session:
                session.execute(delete(ClusterMeta))
            wrote, refused = _race(db, keys)
            assert wrote.count(True) == 1
            winner = _stored(db)
            assert winner in (check_value(SECRET), check_value(OTHER))
            losers = [k for k in keys if check_value(k) != winner]
            assert sorted(refused) == sorted(losers)
    finally:
        db.dispose()


def _sealed_module(services: Services) -> None:
    manifest = {
        "name": "sealed",
        "version": "1.0.0",
        "displayName": "Sealed",
        "config": {"schema": {"apiKey": {"type": "string", "sensitive": True}}},
    }
    services.registry.register(manifest, actor="test")
    services.registry.set_config("sealed", {"apiKey": "s3cret-value"}, actor="test")


def test_a_database_from_before_the_check_value_adopts_the_key_that_opens_its_secrets(
    services: Services, tmp_path: Path
) -> None:
    _sealed_module(services)
    with services.db.write() as session:  # as a database made before migration 0006
        session.execute(delete(ClusterMeta))
    with pytest.raises(ConfigurationError) as refused:
        Services.start(_settings(services.settings, OTHER, tmp_path / "b"))
    assert REFUSAL in refused.value.detail
    assert _stored(services.db) is None  # a wrong key is never adopted
    adopted = Services.start(_settings(services.settings, SECRET, tmp_path / "c"))
    adopted.close()
    assert _stored(services.db) == check_value(SECRET)


def test_a_database_without_secrets_adopts_the_first_key(services: Services) -> None:
    with services.db.write() as session:
        session.execute(delete(ClusterMeta))
    assert verify_secret_key(services.db, OTHER) is True
    assert _stored(services.db) == check_value(OTHER)


def _serve_refused(data_dir: Path, database_url: str | None, secret: str) -> str:
    """Run `modhub serve` with `secret`; assert it exits non-zero before serving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(data_dir),
            "MODHUB_SECRET_KEY": secret,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
        }
    )
    if database_url:
        env["MODHUB_DATABASE_URL"] = database_url
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    output = " ".join((done.stdout + done.stderr).split())  # Rich wraps long lines
    assert "modhub serving" not in output
    return output


def test_modhub_serve_with_another_key_refuses_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    node_a = start_server(tmp_path / "a", postgres_url)
    try:
        output = _serve_refused(tmp_path / "b", postgres_url, OTHER)
        assert REFUSAL in output
        assert OTHER not in output
        assert SECRET not in output
        assert httpx.get(node_a.url + "/healthz", timeout=5).status_code == 200
    finally:
        stop_server(node_a)
    node_c = start_server(tmp_path / "c", postgres_url)  # the cluster's key still joins
    stop_server(node_c)


def test_a_sqlite_data_dir_restarted_with_another_key_refuses(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    login = httpx.post(
        first.url + "/api/v1/auth/login",
        json={"username": "admin", "password": PASSWORD},
        timeout=10,
    )
    assert login.status_code == 200
    stop_server(first)
    assert REFUSAL in _serve_refused(data_dir, None, OTHER)
    # The commands that work on the database directly are refused as well.
    command = subprocess.run(
        [sys.executable, "-m", "modhub", "tokens", "create", "--user", "admin"],
        env={**first.env, "MODHUB_SECRET_KEY": OTHER, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 2
    assert REFUSAL in " ".join(command.stderr.split())
    assert "mh_" not in command.stdout
    again = start_server(data_dir)  # the key it was set up with still starts it
    stop_server(again)
