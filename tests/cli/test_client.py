"""`modhub module ...` against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import PASSWORD, LiveServer, bearer, free_port
from ..e2e.seed_spec import example_manifest, vmware_manifest

SECRET_VALUE = "s3cret-vcenter-pw"
MASK = "********"


def modhub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m modhub ARGS` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "modhub", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """Return the environment without MODHUB_* from outside, with a wide terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """Return the output of a command that must have succeeded."""
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def failed(done: subprocess.CompletedProcess[str], code: int) -> str:
    """Return the error output of a command that must have failed with `code`."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture
def token(live_server: LiveServer) -> str:
    """Return an admin access token of the live server."""
    response = httpx.post(
        live_server.url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    value: str = response.json()["accessToken"]
    return value


@pytest.fixture
def env(live_server: LiveServer, token: str) -> dict[str, str]:
    """Return an environment naming the live server and the token (MODHUB_URL, MODHUB_TOKEN)."""
    return clean_env(MODHUB_URL=live_server.url, MODHUB_TOKEN=token)


@pytest.fixture
def api(live_server: LiveServer, token: str) -> httpx.Client:
    """Return an API client of the live server, as admin."""
    return httpx.Client(base_url=live_server.url + "/api/v1", headers=bearer(token))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest` as `folder/<name>.json` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{manifest['name']}.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def status_of(api: httpx.Client, name: str) -> str:
    """Return a module's status as the server has it."""
    response = api.get(f"/modules/{name}")
    assert response.status_code == 200, response.text
    value: str = response.json()["status"]
    return value


def test_module_commands_round_trip(
    tmp_path: Path, live_server: LiveServer, token: str, env: dict[str, str], api: httpx.Client
) -> None:
    example = write_manifest(tmp_path, example_manifest(2))
    vmware = write_manifest(tmp_path, vmware_manifest())

    # install, with --url and --token on the command line ...
    flags = ("--url", live_server.url, "--token", token)
    output = ok(modhub("module", "install", str(example), *flags, env=clean_env()))
    assert "registered example-module 1.0.0" in output
    assert "example-module 1.0.0 is DISABLED" in output
    assert status_of(api, "example-module") == "DISABLED"
    # ... and with MODHUB_URL and MODHUB_TOKEN.
    output = ok(modhub("module", "install", str(vmware), env=env))
    assert "registered vmware-vcenter 1.0.0" in output
    assert status_of(api, "vmware-vcenter") == "DISABLED"

    # list: a table, and JSON.
    output = ok(modhub("module", "list", env=env))
    rows = [line for line in output.splitlines() if "│" in line]
    assert any("example-module" in r and "Example Module" in r and "DISABLED" in r for r in rows)
    assert any("vmware-vcenter" in r and "VMware vCenter Module" in r for r in rows)
    assert "2 module(s)" in output
    page = json.loads(ok(modhub("module", "list", "--json", "-q", "vmware", env=env)))
    assert [m["name"] for m in page["items"]] == ["vmware-vcenter"]
    assert page["total"] == 1

    # show
    shown = json.loads(ok(modhub("module", "show", "vmware-vcenter", env=env)))
    assert shown["name"] == "vmware-vcenter"
    assert shown["manifest"] == vmware_manifest()

    # enable: --dry-run changes nothing.
    output = ok(modhub("module", "enable", "example-module", "--dry-run", env=env))
    assert "would change example-module: DISABLED → ENABLED" in output
    assert status_of(api, "example-module") == "DISABLED"
    output = ok(modhub("module", "enable", "example-module", env=env))
    assert "example-module is ENABLED" in output
    assert status_of(api, "example-module") == "ENABLED"
    output = ok(modhub("module", "enable", "example-module", "--dry-run", env=env))
    assert "nothing to change" in output

    # disable
    output = ok(modhub("module", "disable", "example-module", "--dry-run", env=env))
    assert "would change example-module: ENABLED → DISABLED" in output
    assert status_of(api, "example-module") == "ENABLED"
    output = ok(modhub("module", "disable", "example-module", env=env))
    assert "example-module is DISABLED" in output
    assert status_of(api, "example-module") == "DISABLED"

    # config set: the secret never comes back.
    done = modhub(
        "module", "config", "set", "vmware-vcenter", "vcenterHost=vc.example.com",
        "vcenterUsername=automation", f"vcenterPassword={SECRET_VALUE}", "syncInterval=12",
        env=env,
    )  # fmt: skip
    config = json.loads(ok(done))
    assert config == {
        "vcenterHost": "vc.example.com",
        "vcenterUsername": "automation",
        "vcenterPassword": MASK,
        "syncInterval": 12,
    }
    assert SECRET_VALUE not in done.stdout + done.stderr
    # Setting one key keeps the others, the secret included.
    done = modhub("module", "config", "set", "vmware-vcenter", "syncInterval=3", env=env)
    assert json.loads(ok(done)) == {**config, "syncInterval": 3}
    assert api.get("/modules/vmware-vcenter").json()["config"]["vcenterPassword"] == MASK

    # remove: --dry-run changes nothing.
    output = ok(modhub("module", "remove", "example-module", "--dry-run", env=env))
    assert "would remove example-module" in output
    assert status_of(api, "example-module") == "DISABLED"
    output = ok(modhub("module", "remove", "example-module", env=env))
    assert "removed example-module" in output
    assert api.get("/modules/example-module").status_code == 404
    assert [m["name"] for m in api.get("/modules").json()["items"]] == ["vmware-vcenter"]


def test_server_errors_print_the_problem_and_exit_1(
    tmp_path: Path, live_server: LiveServer, env: dict[str, str], api: httpx.Client
) -> None:
    stderr = failed(modhub("module", "show", "no-such-module", env=env), 1)
    assert "error 404" in stderr
    assert "no module named 'no-such-module'" in stderr

    invalid = write_manifest(tmp_path, {**example_manifest(2), "version": "1.0"})
    stderr = failed(modhub("module", "install", str(invalid), env=env), 1)
    assert "error 422" in stderr
    assert "/manifest/version" in stderr
    assert "invalid_version" in stderr

    vmware = write_manifest(tmp_path, vmware_manifest())
    ok(modhub("module", "install", str(vmware), env=env))
    stderr = failed(modhub("module", "install", str(vmware), env=env), 1)
    assert "error 409" in stderr
    assert "already registered" in stderr

    stderr = failed(modhub("module", "enable", "vmware-vcenter", env=env), 1)
    assert "error 409" in stderr
    assert "core-auth" in stderr

    done = modhub(
        "module", "config", "set", "vmware-vcenter", "syncInterval=99", "vcenterHost=h",
        env=env,
    )  # fmt: skip
    stderr = failed(done, 1)
    assert "error 422" in stderr
    for path in ("/config/syncInterval", "/config/vcenterUsername", "/config/vcenterPassword"):
        assert path in stderr

    # The server's words are printed as they are, brackets included (not as Rich markup).
    stderr = failed(modhub("module", "config", "set", "vmware-vcenter", "[/x]=1", env=env), 1)
    assert "/config/[/x]  unknown_config_key" in stderr
    assert "'[/x]' is not in the module's config schema" in stderr

    stderr = failed(modhub("module", "config", "set", "vmware-vcenter", "novalue", env=env), 2)
    assert "'novalue' is not KEY=VALUE" in stderr

    stderr = failed(modhub("module", "list", env={**env, "MODHUB_TOKEN": "forged"}), 1)
    assert "error 401" in stderr

    # A viewer may list but not remove: 403 naming the permission.
    response = api.post(
        "/users", json={"username": "vera", "password": "viewer password", "role": "viewer"}
    )
    assert response.status_code == 201, response.text
    login = httpx.post(
        live_server.url + "/api/v1/auth/login",
        json={"username": "vera", "password": "viewer password"},
    )
    viewer = {**env, "MODHUB_TOKEN": login.json()["accessToken"]}
    assert "1 module(s)" in ok(modhub("module", "list", env=viewer))
    stderr = failed(modhub("module", "remove", "vmware-vcenter", env=viewer), 1)
    assert "error 403" in stderr
    assert "modules:admin" in stderr

    assert status_of(api, "vmware-vcenter") == "DISABLED"


def test_install_of_a_folder_uploads_the_bundle(
    tmp_path: Path, env: dict[str, str], api: httpx.Client
) -> None:
    folder = tmp_path / "hello-bundle"
    manifest = {
        "name": "hello-bundle",
        "version": "1.0.0",
        "displayName": "Hello Bundle",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/hi", "handler": "handlers/hi.py"}]}
        },
    }
    (folder / "handlers").mkdir(parents=True)
    (folder / "module.json").write_text(json.dumps(manifest))
    (folder / "handlers" / "hi.py").write_text("def handler(request):\n    return {'hi': 1}\n")
    output = ok(modhub("module", "install", str(folder), env=env))
    assert "registered hello-bundle 1.0.0" in output
    assert status_of(api, "hello-bundle") == "DISABLED"


@pytest.mark.parametrize("name", ["notes.txt", "module.yaml", "missing-folder"])
def test_install_of_something_that_is_no_module_exits_2(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if "." in name:
        path.write_text("name: x\n")
    env = clean_env(MODHUB_URL=f"http://127.0.0.1:{free_port()}", MODHUB_TOKEN="t")
    stderr = failed(modhub("module", "install", str(path), env=env), 2)
    assert "is not a module folder, .zip, .tar.gz or module.json" in stderr


def test_unreadable_manifest_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "module.json"
    path.write_text("{not json")
    env = clean_env(MODHUB_URL=f"http://127.0.0.1:{free_port()}", MODHUB_TOKEN="t")
    stderr = failed(modhub("module", "install", str(path), env=env), 1)
    assert "invalid JSON at line 1" in stderr


@pytest.mark.parametrize(
    "args",
    [
        ("module", "list"),
        ("module", "show", "x"),
        ("module", "enable", "x"),
        ("module", "disable", "x"),
        ("module", "remove", "x"),
        ("module", "config", "set", "x", "a=1"),
    ],
)
def test_no_token_exits_2(args: tuple[str, ...]) -> None:
    env = clean_env(MODHUB_URL=f"http://127.0.0.1:{free_port()}")
    stderr = failed(modhub(*args, env=env), 2)
    assert "no token: pass --token or set MODHUB_TOKEN" in stderr


def test_no_token_for_install_exits_2(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, example_manifest(2))
    env = clean_env(MODHUB_URL=f"http://127.0.0.1:{free_port()}")
    assert "no token" in failed(modhub("module", "install", str(path), env=env), 2)


def test_unreachable_server_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    stderr = failed(modhub("module", "list", env=clean_env(MODHUB_URL=url, MODHUB_TOKEN="t")), 2)
    assert f"cannot reach {url}" in stderr
