"""`modhub module store list|get|delete` and `modhub module remove --keep-data`: what is sent,
what is printed, and once end to end against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modhub.cli import client
from modhub.cli.app import app
from modhub.db import Database
from modhub.store import ModuleStore

from ..conftest import LiveServer
from .test_client import env, failed, modhub, ok, token  # noqa: F401  (fixtures)

runner = CliRunner()
FLAGS = ("--url", "http://h:1", "--token", "t")
PAGE = {
    "items": [
        {"key": "vm/1", "value": {"name": "web-01"}, "version": 3, "expiresAt": None},
        {"key": "[red]x", "value": "y" * 200, "version": 1, "expiresAt": "2027-01-01T00:00:00Z"},
    ],
    "cursor": "dm0vMg==",
}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Answer every API request as the store endpoints would; return what was asked."""
    requests: list[dict[str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        requests.append({"method": method, "url": url, "params": kwargs.get("params")})
        if method == "DELETE" and "/store/" in url:
            return httpx.Response(200, json={"deleted": True})
        if method == "DELETE":
            return httpx.Response(200, json={"data": {"keys": 4, "bytes": 120, "kept": True}})
        if "/store/" in url:
            return httpx.Response(200, json={**PAGE["items"][0]})  # type: ignore[dict-item]
        return httpx.Response(200, json=PAGE)

    monkeypatch.setattr(client.httpx, "request", request)
    return requests


def test_list_sends_the_options_and_prints_the_page(asked: list[dict[str, Any]]) -> None:
    result = runner.invoke(
        app,
        [
            "module",
            "store",
            "list",
            "vms",
            "--prefix",
            "vm/",
            "--limit",
            "2",
            "--cursor",
            "c1",
            *FLAGS,
        ],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert asked == [
        {
            "method": "GET",
            "url": "http://h:1/api/v1/modules/vms/store",
            "params": {"prefix": "vm/", "limit": 2, "cursor": "c1"},
        }
    ]
    assert "vm/1" in result.output
    assert '{"name":"web-01"}' in result.output
    assert "[red]x" in result.output  # a key is text, not markup
    assert "y" * 200 not in result.output  # long values are cut in a listing
    assert "more: --cursor dm0vMg==" in result.output


def test_get_quotes_the_key_and_prints_its_json_value(asked: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["module", "store", "get", "vms", "a b?#/%", *FLAGS])

    assert result.exit_code == 0, result.output
    assert asked[0]["url"] == "http://h:1/api/v1/modules/vms/store/a%20b%3F%23%2F%25"
    assert json.loads(result.output) == {"name": "web-01"}


def test_delete_sends_a_delete_of_the_key(asked: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["module", "store", "delete", "vms", "vm/1", *FLAGS])

    assert result.exit_code == 0, result.output
    assert asked == [
        {"method": "DELETE", "url": "http://h:1/api/v1/modules/vms/store/vm%2F1", "params": None}
    ]
    assert "deleted vm/1 from vms's store" in result.output


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_a_bad_limit_exits_2_naming_it(asked: list[dict[str, Any]], limit: str) -> None:
    result = runner.invoke(app, ["module", "store", "list", "vms", "--limit", limit, *FLAGS])
    assert result.exit_code == 2
    assert "--limit" in result.output
    assert asked == []


def test_remove_keep_data_dry_run_says_what_stays(asked: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["module", "remove", "vms", "--keep-data", "--dry-run", *FLAGS])

    assert result.exit_code == 0, result.output
    assert asked[0]["params"] == {"dryRun": "true", "keepData": "true"}
    assert "would remove vms, keeping its 4 stored keys (120 bytes)" in result.output


# -- against a real server ---------------------------------------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[ModuleStore]:
    """Return the store of the live server's database."""
    db = Database(database_url)
    yield ModuleStore(db)
    db.dispose()


def test_store_commands_against_a_server(
    live_server: LiveServer,
    env: dict[str, str],  # noqa: F811
    store: ModuleStore,
) -> None:
    api = httpx.Client(
        base_url=live_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {env['MODHUB_TOKEN']}"},
    )
    manifest = {"name": "vms", "version": "1.0.0", "displayName": "VMs"}
    assert api.post("/modules", json={"manifest": manifest}).status_code == 201
    for index in range(3):
        store.set("vms", f"vm/{index}", {"n": index}, quota_bytes=1024 * 1024)

    listed = ok(modhub("module", "store", "list", "vms", "--limit", "2", env=env))
    assert "vm/0" in listed
    assert "vm/1" in listed
    assert "vm/2" not in listed
    cursor = listed.split("more: --cursor ")[1].split()[0]
    rest = ok(modhub("module", "store", "list", "vms", "--cursor", cursor, env=env))
    assert "vm/2" in rest
    assert "more:" not in rest

    assert json.loads(ok(modhub("module", "store", "get", "vms", "vm/1", env=env))) == {"n": 1}
    ok(modhub("module", "store", "delete", "vms", "vm/1", env=env))
    missing = failed(modhub("module", "store", "get", "vms", "vm/1", env=env), 1)
    assert "error 404" in missing
    assert "no key 'vm/1'" in missing

    planned = ok(modhub("module", "remove", "vms", "--dry-run", env=env))
    assert "would remove vms, deleting its 2 stored keys" in planned
    assert "stored data kept" in ok(modhub("module", "remove", "vms", "--keep-data", env=env))
    assert store.usage("vms").keys == 2
