"""The seed's curl examples, verbatim, against a real `modhub serve`; then the rest of its API.

The five ```bash blocks with curl in `seed.md` (a verbatim copy of the seed) run through
`bash -c` with two substitutions only: the seed's host becomes the live server's URL and
`YOUR_ACCESS_TOKEN` an admin's access token. ` -s -w '\\n%{http_code}'` is appended so
that the status code can be read. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from modhub.db import Database

from ..conftest import PASSWORD, LiveServer, bearer, start_server, stop_server
from .seed_spec import (
    SEED_HOST,
    SEED_TOKEN,
    CurlExample,
    curl_examples,
    example_manifest,
    vmware_manifest,
)

WRITE_OUT = " -s -w '\\n%{http_code}'"
PROBLEM = "application/problem+json"
MASK = "********"


def login(url: str, username: str = "admin", password: str = PASSWORD) -> str:
    """Return an access token from POST /api/v1/auth/login."""
    response = httpx.post(
        url + "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokenType"] == "bearer"
    assert body["expiresIn"] > 0
    token: str = body["accessToken"]
    return token


def run_curl(example: CurlExample, url: str, token: str) -> tuple[int, Any]:
    """Run a seed example through bash; return the HTTP status and the parsed JSON body."""
    command = example.for_server(url, token)
    assert SEED_HOST not in command
    assert SEED_TOKEN not in command
    # Appending is safe only if the block is one curl command ending on a complete line.
    assert not command.endswith("\\")
    lexer = shlex.shlex(command.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv = list(lexer)
    assert argv[0] == "curl"
    assert not {";", "&", "&&", "|", "||", ">", "<"} & set(argv), argv
    done = subprocess.run(
        ["bash", "-c", command + WRITE_OUT], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else None


def examples_by_number() -> dict[int, CurlExample]:
    """Return the seed's curl examples keyed by their test number."""
    found = {}
    for example in curl_examples():
        match = re.match(r"Test (\d+):", example.title)
        assert match, example.title
        found[int(match.group(1))] = example
    return found


def test_the_seed_has_five_curl_examples() -> None:
    examples = examples_by_number()
    assert sorted(examples) == [1, 2, 3, 4, 5]
    for example in examples.values():
        assert SEED_HOST in example.command
        assert f"Authorization: Bearer {SEED_TOKEN}" in example.command


def test_seed_curl_examples_verbatim(live_server: LiveServer) -> None:
    token = login(live_server.url)
    examples = examples_by_number()

    # Test 1: validate. Valid, without a warning: TypeScript handlers run in the Node worker.
    status, body = run_curl(examples[1], live_server.url, token)
    assert status == 200, body
    assert body == {"valid": True, "errors": [], "warnings": []}

    # Test 2: register.
    sent = examples[2].request_body()["manifest"]
    status, body = run_curl(examples[2], live_server.url, token)
    assert status == 201, body
    assert body["name"] == "example-module"
    assert body["version"] == "1.0.0"
    assert body["status"] == "REGISTERED"
    assert body["displayName"] == "Example Module"
    assert body["description"] == "A test module for demonstration"
    assert body["author"] == "Automation Platform Team"
    assert body["manifest"] == sent
    assert body["config"] == {}
    assert body["dependencies"] == []
    assert body["dependents"] == []
    assert [v["version"] for v in body["versions"]] == ["1.0.0"]

    # Test 3: list.
    status, body = run_curl(examples[3], live_server.url, token)
    assert status == 200, body
    assert [m["name"] for m in body["items"]] == ["example-module"]
    assert body["items"][0]["status"] == "REGISTERED"
    assert body["total"] == 1
    assert body["offset"] == 0
    assert body["limit"] >= 1

    # Test 4: details.
    status, body = run_curl(examples[4], live_server.url, token)
    assert status == 200, body
    assert body["name"] == "example-module"
    assert body["status"] == "REGISTERED"
    assert body["manifest"] == sent
    assert body["versions"][0]["active"] is True
    assert body["lastError"] is None
    for key in ("createdAt", "updatedAt", "path", "license", "config", "dependents"):
        assert key in body

    # Test 5: enable (a REGISTERED module is installed on the way).
    status, body = run_curl(examples[5], live_server.url, token)
    assert status == 200, body
    assert body["name"] == "example-module"
    assert body["status"] == "ENABLED"
    detail = httpx.get(live_server.url + "/api/v1/modules/example-module", headers=bearer(token))
    assert detail.json()["status"] == "ENABLED"

    # The same examples without a token are refused.
    status, body = run_curl(examples[3], live_server.url, "not-a-token")
    assert status == 401, body


def test_first_start_without_password_prints_a_generated_one(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        from modhub.db import upgrade

        db = Database(database_url)
        upgrade(db.engine)
        db.dispose()
    server = start_server(tmp_path / "gen", database_url, {"MODHUB_ADMIN_PASSWORD": ""})
    try:
        match = re.search(r"Created user admin with password (\S+) ", server.output())
        assert match, server.output()
        assert f"Log in: curl -X POST {server.url}/api/v1/auth/login" in server.output()
        login(server.url, password=match.group(1))
    finally:
        stop_server(server)
    again = start_server(tmp_path / "gen", database_url, {"MODHUB_ADMIN_PASSWORD": ""})
    try:
        assert "Created user" not in again.output()
        assert "Log in:" not in again.output()
        login(again.url, password=match.group(1))
    finally:
        stop_server(again)


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert body["detail"]
    return body


def test_seed_api_table_config_delete_and_validation_errors(
    live_server: LiveServer, database_url: str
) -> None:
    # The first start said how to log in, with the password from MODHUB_ADMIN_PASSWORD.
    output = live_server.output()
    assert "Created user admin with the password in MODHUB_ADMIN_PASSWORD" in output
    assert f"Log in: curl -X POST {live_server.url}/api/v1/auth/login" in output
    assert PASSWORD not in output
    wrong = httpx.post(
        live_server.url + "/api/v1/auth/login",
        json={"username": "admin", "password": "not the password"},
    )
    assert wrong.status_code == 401
    api = httpx.Client(base_url=live_server.url + "/api/v1", headers=bearer(login(live_server.url)))

    # Register the seed's complete manifest; its config schema gives the defaults.
    vmware = vmware_manifest()
    response = api.post("/modules", json={"manifest": vmware})
    assert response.status_code == 201, response.text
    module = response.json()
    assert module["status"] == "REGISTERED"
    assert module["config"] == {"syncInterval": 6}
    assert module["dependencies"] == [
        {
            "name": "core-auth",
            "range": "^1.0.0",
            "installedVersion": None,
            "status": None,
            "satisfied": False,
        }
    ]
    _problem(api.post("/modules", json={"manifest": vmware}), 409)

    # PUT config: every invalid field in one 422.
    response = api.put(
        "/modules/vmware-vcenter/config",
        json={"config": {"syncInterval": 99, "vcenterUsername": 5, "colour": "red"}},
    )
    errors = {e["path"]: e["code"] for e in _problem(response, 422)["errors"]}
    assert errors == {
        "/config/colour": "unknown_config_key",
        "/config/syncInterval": "invalid_value",
        "/config/vcenterUsername": "invalid_value",
        "/config/vcenterHost": "required",
        "/config/vcenterPassword": "required",
    }

    # PUT config: stored, the password masked in every answer and sealed in the database.
    secret = "s3cret-vcenter-pw"
    config = {
        "vcenterHost": "vc.example.com",
        "vcenterUsername": "automation",
        "vcenterPassword": secret,
        "syncInterval": 12,
    }
    response = api.put("/modules/vmware-vcenter/config", json={"config": config})
    assert response.status_code == 200, response.text
    assert response.json() == {"config": {**config, "vcenterPassword": MASK}}
    assert secret not in response.text
    detail = api.get("/modules/vmware-vcenter")
    assert detail.json()["config"]["vcenterPassword"] == MASK
    assert secret not in detail.text
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            stored = connection.execute(
                text("SELECT config FROM modules WHERE name = 'vmware-vcenter'")
            ).scalar_one()
    finally:
        db.dispose()
    assert "vc.example.com" in str(stored)
    assert secret not in str(stored)
    # Sending the mask back keeps the stored secret.
    response = api.put(
        "/modules/vmware-vcenter/config",
        json={"config": {**config, "vcenterPassword": MASK, "syncInterval": 3}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["config"]["vcenterPassword"] == MASK
    assert response.json()["config"]["syncInterval"] == 3

    # Status: enabling needs core-auth, which is not registered.
    response = api.put("/modules/vmware-vcenter/status", json={"status": "ENABLED"})
    assert "core-auth" in _problem(response, 409)["detail"]
    assert api.get("/modules/vmware-vcenter").json()["status"] == "REGISTERED"

    # DELETE: refused while a module depends on it, then 204, then gone.
    base = example_manifest(2)
    assert api.post("/modules", json={"manifest": base}).status_code == 201
    dependent = {
        **base,
        "name": "example-dependent",
        "displayName": "Example Dependent",
        "dependencies": {"modules": {"example-module": "^1.0.0"}},
    }
    assert api.post("/modules", json={"manifest": dependent}).status_code == 201
    response = api.delete("/modules/example-module")
    assert "example-dependent" in _problem(response, 409)["detail"]
    response = api.delete("/modules/example-dependent")
    assert response.status_code == 204, response.text
    assert response.content == b""
    response = api.delete("/modules/example-module")
    assert response.status_code == 204, response.text
    _problem(api.get("/modules/example-module"), 404)
    _problem(api.delete("/modules/example-module"), 404)
    assert [m["name"] for m in api.get("/modules").json()["items"]] == ["vmware-vcenter"]

    # Validate with errors: a 200 answer listing each error with its JSON path.
    bad = {**base, "name": "Example Module!", "version": "1.0"}
    bad["capabilities"] = {"api": {"routes": [{"method": "FETCH", "path": "/x", "handler": "h"}]}}
    response = api.post("/modules/validate", json={"manifest": bad})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is False
    paths = {e["path"] for e in result["errors"]}
    assert {"/name", "/version", "/capabilities/api/routes/0/method"} <= paths
    for error in result["errors"]:
        assert error["code"]
        assert error["message"]
    # The same manifest is refused by POST /modules with a 422 naming the same fields.
    response = api.post("/modules", json={"manifest": bad})
    refused = {e["path"] for e in _problem(response, 422)["errors"]}
    assert {"/manifest/name", "/manifest/version"} <= refused

    # The manifest schema, and no token at all.
    assert api.get("/schemas/manifest").json()["type"] == "object"
    _problem(httpx.get(live_server.url + "/api/v1/modules"), 401)
