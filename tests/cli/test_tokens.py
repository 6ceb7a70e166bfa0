"""`modhub tokens list|revoke` through the real command, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from modhub.db import Database
from modhub.db.models import AuditEntry

from ..conftest import LiveServer, bearer
from .test_admin import base_env, create_user, modhub


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Return the environment of a command on a database that `modhub db upgrade` migrated."""
    env = base_env(tmp_path / "data", database_url)
    done = modhub("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    return env


def table(stdout: str) -> list[list[str]]:
    """Return the body rows of the `tokens list` table, cell by cell."""
    lines = stdout.splitlines()
    [header] = [line.split("┃")[1:-1] for line in lines if line.count("┃") == 8]
    assert [cell.strip() for cell in header] == [
        "id", "user", "name", "prefix", "created", "last used", "revoked",
    ]  # fmt: skip
    return [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.count("│") == 8
    ]


def new_token(env: dict[str, str], user: str, name: str) -> str:
    done = modhub("tokens", "create", "--user", user, "--name", name, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tokens_list_and_revoke(env: dict[str, str], database_url: str) -> None:
    create_user(env, "olga", "operator")
    create_user(env, "vic", "viewer")
    olgas = new_token(env, "olga", "deploy")
    vics = new_token(env, "vic", "ci")

    listed = modhub("tokens", "list", env=env)

    assert listed.returncode == 0, listed.stderr
    rows = table(listed.stdout)
    assert [(r[1], r[2], r[5], r[6]) for r in rows] == [
        ("olga", "deploy", "never", "no"),
        ("vic", "ci", "never", "no"),
    ]
    assert [r[3] for r in rows] == [olgas[:10] + "…", vics[:10] + "…"]
    assert olgas not in listed.stdout
    assert vics not in listed.stdout
    vic_id = rows[1][0]
    only_vic = modhub("tokens", "list", "--user", "vic", env=env)
    assert only_vic.returncode == 0, only_vic.stderr
    assert [(r[0], r[1]) for r in table(only_vic.stdout)] == [(vic_id, "vic")]

    revoked = modhub("tokens", "revoke", vic_id, env=env)

    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked API token {vic_id} (vic, ci)" in revoked.stdout
    after = table(modhub("tokens", "list", env=env).stdout)
    assert [(r[1], r[6]) for r in after] == [("olga", "no"), ("vic", "yes")]
    db = Database(database_url)
    try:
        with db.read() as session:
            entry = session.scalars(
                select(AuditEntry).where(AuditEntry.action == "token.revoke")
            ).one()
    finally:
        db.dispose()
    assert (entry.actor, entry.target, entry.detail) == (
        "system",
        "vic",
        {"id": int(vic_id), "name": "ci"},
    )


def test_tokens_list_and_revoke_refusals(env: dict[str, str]) -> None:
    unknown_user = modhub("tokens", "list", "--user", "ghost", env=env)
    assert unknown_user.returncode == 1
    assert "no user 'ghost'" in unknown_user.stderr

    unknown_token = modhub("tokens", "revoke", "999", env=env)
    assert unknown_token.returncode == 1
    assert "no API token 999" in unknown_token.stderr
    assert "Traceback" not in unknown_token.stderr

    not_an_id = modhub("tokens", "revoke", "abc", env=env)
    assert not_an_id.returncode == 2
    assert "Traceback" not in not_an_id.stderr

    empty = modhub("tokens", "list", env=env)
    assert empty.returncode == 0, empty.stderr
    assert table(empty.stdout) == []


def test_a_token_revoked_by_the_command_is_refused_by_a_running_server(
    live_server: LiveServer,
) -> None:
    env = {**live_server.env, "COLUMNS": "200"}
    create_user(env, "vic", "viewer")
    token = new_token(env, "vic", "ci")
    api = httpx.Client(base_url=live_server.url + "/api/v1", headers=bearer(token))
    assert api.get("/modules").status_code == 200
    [row] = table(modhub("tokens", "list", "--user", "vic", env=env).stdout)

    revoked = modhub("tokens", "revoke", row[0], env=env)

    assert revoked.returncode == 0, revoked.stderr
    refused = api.get("/modules")
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
