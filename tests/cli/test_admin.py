"""`modhub db|users|tokens|roles|serve` through the real command, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modhub.db import Database
from modhub.db.migrate import is_current

from ..conftest import PASSWORD, SECRET, LiveServer, bearer, free_port

USER_PASSWORD = "operator password 1"


def modhub(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m modhub ARGS` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "modhub", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    """Return the environment of a command: no MODHUB_* from outside, a wide terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update({"MODHUB_DATA_DIR": str(data_dir), "MODHUB_SECRET_KEY": SECRET, "COLUMNS": "200"})
    if database_url:
        env["MODHUB_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Return the environment of a command on a database that `modhub db upgrade` migrated."""
    env = base_env(tmp_path / "data", database_url)
    done = modhub("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    return env


def login(url: str, username: str, password: str) -> str:
    """Return an access token of `username`."""
    response = httpx.post(
        url + "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


def create_user(env: dict[str, str], name: str, role: str, password: str = USER_PASSWORD) -> None:
    """Create a user through the command, which must succeed."""
    done = modhub(
        "users", "create", name, "--role", role, "--password-stdin", env=env, stdin=password + "\n"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"created user {name} ({role})" in done.stdout


def test_db_upgrade_migrates_and_is_idempotent(tmp_path: Path, database_url: str) -> None:
    env = base_env(tmp_path / "data", database_url)
    db = Database(database_url)
    try:
        if not database_url.startswith("sqlite"):
            assert not is_current(db.engine)
        first = modhub("db", "upgrade", env=env)
        assert first.returncode == 0, first.stderr
        assert "newest schema" in first.stdout
        assert is_current(db.engine)
        again = modhub("db", "upgrade", env=env)
        assert again.returncode == 0, again.stderr
        assert is_current(db.engine)
    finally:
        db.dispose()


def test_db_upgrade_of_the_embedded_database_under_data_dir(tmp_path: Path) -> None:
    env = base_env(tmp_path / "elsewhere", None)
    done = modhub("db", "upgrade", "--data-dir", str(tmp_path / "data"), env=env)
    assert done.returncode == 0, done.stderr
    assert "sqlite" in done.stdout
    assert (tmp_path / "data" / "modhub.db").is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_created_user_logs_in_with_its_role(live_server: LiveServer) -> None:
    env = {**live_server.env, "COLUMNS": "200"}
    create_user(env, "olga", "operator")
    token = login(live_server.url, "olga", USER_PASSWORD)
    api = httpx.Client(base_url=live_server.url + "/api/v1", headers=bearer(token))
    assert api.get("/modules").status_code == 200
    # An operator may not register modules (admin only) nor create users.
    manifest = {"name": "x-module", "version": "1.0.0", "displayName": "X"}
    assert api.post("/modules", json={"manifest": manifest}).status_code == 403
    wrong = httpx.post(
        live_server.url + "/api/v1/auth/login", json={"username": "olga", "password": "nope"}
    )
    assert wrong.status_code == 401
    # The password is the line read from stdin, exactly (spaces kept, newline dropped).
    password = "  spaces at both ends  "
    create_user(env, "pat", "viewer", password)
    login(live_server.url, "pat", password)


def test_users_create_refuses_duplicates_unknown_roles_and_short_passwords(
    env: dict[str, str],
) -> None:
    create_user(env, "olga", "operator")

    again = modhub(
        "users", "create", "olga", "--role", "viewer", "--password-stdin", env=env,
        stdin=USER_PASSWORD + "\n",
    )  # fmt: skip
    assert again.returncode == 1
    assert "user 'olga' already exists" in again.stderr
    assert "Traceback" not in again.stderr

    unknown = modhub(
        "users", "create", "wanda", "--role", "wizard", "--password-stdin", env=env,
        stdin=USER_PASSWORD + "\n",
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "unknown role 'wizard'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    short = modhub(
        "users", "create", "sam", "--role", "viewer", "--password-stdin", env=env, stdin="short\n"
    )
    assert short.returncode == 1
    assert "at least 8 characters" in short.stderr

    bad_name = modhub(
        "users", "create", "no spaces", "--role", "viewer", "--password-stdin", env=env,
        stdin=USER_PASSWORD + "\n",
    )  # fmt: skip
    assert bad_name.returncode == 1
    assert "/username" in bad_name.stderr


def test_token_from_the_command_authenticates_against_a_live_server(
    live_server: LiveServer,
) -> None:
    env = {**live_server.env, "COLUMNS": "200"}
    create_user(env, "vic", "viewer")
    done = modhub("tokens", "create", "--user", "vic", "--name", "ci", env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("mh_")
    assert "\n" not in token
    api = httpx.Client(base_url=live_server.url + "/api/v1")
    listed = api.get("/modules", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    # The token acts as vic, a viewer: reading yes, writing no.
    manifest = {"name": "x-module", "version": "1.0.0", "displayName": "X"}
    assert api.post("/modules", json={"manifest": manifest}, headers=bearer(token)).status_code == (
        403
    )
    assert api.get("/modules", headers=bearer(token[:-2] + "xx")).status_code == 401
    # Each call prints a new token; both work.
    second = modhub("tokens", "create", "--user", "vic", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() != token
    assert api.get("/modules", headers=bearer(second.stdout.strip())).status_code == 200

    # A permission granted through the command is what the server then reports.
    done = modhub("roles", "grant", "viewer", "vmware:read", env=env)
    assert done.returncode == 0, done.stderr
    roles = httpx.get(
        live_server.url + "/api/v1/roles", headers=bearer(login(live_server.url, "admin", PASSWORD))
    )
    assert roles.status_code == 200, roles.text
    viewer = next(r for r in roles.json() if r["name"] == "viewer")
    assert "vmware:read" in viewer["permissions"]


def test_tokens_create_for_an_unknown_user_fails(env: dict[str, str]) -> None:
    done = modhub("tokens", "create", "--user", "ghost", env=env)
    assert done.returncode == 1
    assert "no user 'ghost'" in done.stderr
    assert done.stdout == ""


def test_roles_grant_list_revoke(env: dict[str, str]) -> None:
    granted = modhub("roles", "grant", "operator", "vmware:read", env=env)
    assert granted.returncode == 0, granted.stderr
    assert "granted vmware:read to operator" in granted.stdout

    listed = modhub("roles", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2]
        for line in listed.stdout.splitlines()
        if line.count("│") == 3
    }
    assert "vmware:read" in rows["operator"]
    assert "modules:write" in rows["operator"]
    assert "vmware:read" not in rows["viewer"]

    revoked = modhub("roles", "revoke", "operator", "vmware:read", env=env)
    assert revoked.returncode == 0, revoked.stderr
    listed = modhub("roles", "list", env=env)
    assert "vmware:read" not in listed.stdout


@pytest.mark.parametrize(
    ("role", "permission", "message"),
    [
        ("operator", "NotAPermission", "'NotAPermission' is not a permission"),
        ("wizard", "vmware:read", "no role 'wizard'"),
        ("admin", "vmware:read", "admin role always has every permission"),
    ],
)
def test_roles_grant_refusals(tmp_path: Path, role: str, permission: str, message: str) -> None:
    env = base_env(tmp_path / "data", None)
    done = modhub("roles", "grant", role, permission, env=env)
    assert done.returncode == 1
    assert message in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", "PORT"),
        ("users", "create", "olga", "--role", "operator", "--password-stdin"),
        ("tokens", "create", "--user", "admin"),
        ("roles", "list"),
    ],
)
def test_commands_refuse_an_unmigrated_postgresql(
    tmp_path: Path, postgres_url: str, args: tuple[str, ...]
) -> None:
    env = base_env(tmp_path / "data", postgres_url)
    args = tuple(str(free_port()) if a == "PORT" else a for a in args)
    # A server that starts anyway never exits: the timeout fails the test.
    done = modhub(*args, env=env, stdin=USER_PASSWORD + "\n", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "modhub db upgrade" in done.stderr
    assert "Traceback" not in done.stderr
    db = Database(postgres_url)
    try:
        assert not is_current(db.engine)
    finally:
        db.dispose()


def test_secret_key_file_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = base_env(data, None)
    del env["MODHUB_SECRET_KEY"]
    create_user(env, "olga", "operator")
    key = data / "secret.key"
    assert key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()
    assert len(first.strip()) >= 32
    done = modhub("tokens", "create", "--user", "olga", env=env)
    assert done.returncode == 0, done.stderr
    assert key.read_text() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_secret_key_file_is_not_made_when_the_key_is_set(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_user(base_env(data, None), "olga", "operator")
    assert not (data / "secret.key").exists()


def test_short_secret_key_is_refused(tmp_path: Path) -> None:
    env = {**base_env(tmp_path / "data", None), "MODHUB_SECRET_KEY": "too-short"}
    done = modhub("roles", "list", env=env)
    assert done.returncode == 2
    assert "MODHUB_SECRET_KEY must be at least 32 characters" in done.stderr
