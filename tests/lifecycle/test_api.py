"""The lifecycle over HTTP: bundle upload, install on enable, operations, upgrade, rollback,
verify and delete. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.services import Services
from tests.conftest import bearer
from tests.lifecycle.conftest import as_bundle, entries, wait_for, write_module

API = "/api/v1"
PROBLEM = "application/problem+json"


def upload(client: TestClient, token: str, folder: Path, kind: str = "tar.gz") -> Any:
    """POST the module folder packed as `kind` to the bundle endpoint."""
    bundle = as_bundle(folder, kind)
    with bundle.open("rb") as stream:
        return client.post(
            f"{API}/modules/bundles",
            files={"file": (bundle.name, stream, "application/octet-stream")},
            headers=bearer(token),
        )


def installed(client: TestClient, token: str, sources: Path, name: str, version: str) -> None:
    """Upload `name` at `version` and check it is registered."""
    response = upload(client, token, write_module(sources, name, version))
    assert response.status_code == 201, response.text


def test_upload_bundle_registers_the_module(
    client: TestClient, tokens: dict[str, str], services: Services, sources: Path
) -> None:
    response = upload(client, tokens["admin"], write_module(sources, "demo"), "zip")

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["version"], body["status"]) == ("demo", "1.0.0", "REGISTERED")
    stored = services.settings.data_dir / "modules" / "demo" / "1.0.0"
    assert body["path"] == str(stored)
    assert (stored / "handlers" / "main.py").is_file()
    audit = client.get(f"{API}/audit", params={"target": "demo"}, headers=bearer(tokens["admin"]))
    assert [(e["actor"], e["action"]) for e in audit.json()["items"]] == [
        ("admin", "module.register")
    ]


def test_upload_bundle_needs_admin_and_an_archive(
    client: TestClient, tokens: dict[str, str], services: Services, sources: Path
) -> None:
    folder = write_module(sources, "demo")
    forbidden = upload(client, tokens["operator"], folder)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == PROBLEM

    text = sources / "notes.txt"
    text.write_text("not a bundle")
    with text.open("rb") as stream:
        wrong = client.post(
            f"{API}/modules/bundles",
            files={"file": ("notes.txt", stream, "text/plain")},
            headers=bearer(tokens["admin"]),
        )
    assert wrong.status_code == 422
    assert wrong.headers["content-type"] == PROBLEM
    assert wrong.json()["errors"][0]["path"] == "/file"

    broken = upload(
        client, tokens["admin"], write_module(sources / "b", "bad", write_handler=False)
    )
    assert broken.status_code == 422
    assert "/manifest/capabilities/api/routes/0/handler" in [
        e["path"] for e in broken.json()["errors"]
    ]
    assert entries(services.settings.data_dir / "modules") == []

    upload(client, tokens["admin"], folder)
    again = upload(client, tokens["admin"], folder, "zip")
    assert again.status_code == 409


def test_enable_a_registered_bundle_installs_it(
    client: TestClient, tokens: dict[str, str], services: Services, sources: Path
) -> None:
    admin = bearer(tokens["admin"])
    installed(client, tokens["admin"], sources, "demo", "1.0.0")

    response = client.put(
        f"{API}/modules/demo/status", json={"status": "ENABLED"}, headers=bearer(tokens["operator"])
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ENABLED"
    assert (services.settings.data_dir / "envs" / "demo" / "1.0.0" / "bin" / "python").exists()
    audit = client.get(f"{API}/audit", params={"target": "demo"}, headers=admin).json()
    assert [e["detail"].get("to") for e in reversed(audit["items"])][1:] == [
        "INSTALLING",
        "DISABLED",
        "ENABLED",
    ]


def poll(client: TestClient, location: str, headers: dict[str, str]) -> dict[str, Any]:
    """Return the operation at `location` once it is no longer running."""

    def finished() -> dict[str, Any] | None:
        response = client.get(location, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return None if body["status"] == "running" else body

    result: dict[str, Any] = wait_for(finished, what=f"operation {location}")
    return result


def test_slow_operations_answer_202_and_can_be_polled(
    client: TestClient,
    tokens: dict[str, str],
    services: Services,
    sources: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = bearer(tokens["admin"])
    installed(client, tokens["admin"], sources, "demo", "1.0.0")
    monkeypatch.setattr(services.settings, "operation_wait_seconds", 0)

    response = client.put(f"{API}/modules/demo/status", json={"status": "ENABLED"}, headers=admin)

    assert response.status_code == 202, response.text
    accepted = response.json()
    location = response.headers["location"]
    assert location == f"{API}/operations/{accepted['id']}"
    assert (accepted["kind"], accepted["module"], accepted["actor"]) == ("enable", "demo", "admin")
    operation = poll(client, location, admin)
    assert operation["status"] == "succeeded", operation
    assert operation["error"] is None
    assert operation["finishedAt"] is not None
    assert [(s["name"], s["status"]) for s in operation["steps"]] == [
        ("check-system", "succeeded"),
        ("create-environment", "succeeded"),
        ("set-status", "succeeded"),
    ]
    assert all(s["startedAt"] and s["finishedAt"] for s in operation["steps"])
    assert "Creating virtual environment" in operation["logTail"]
    assert client.get(f"{API}/modules/demo", headers=admin).json()["status"] == "ENABLED"

    removal = client.delete(f"{API}/modules/demo", headers=admin)
    assert removal.status_code == 202, removal.text
    assert poll(client, removal.headers["location"], admin)["status"] == "succeeded"
    assert client.get(f"{API}/modules/demo", headers=admin).status_code == 404

    missing = client.get(f"{API}/operations/{'0' * 32}", headers=admin)
    assert missing.status_code == 404


def test_failed_operation_is_polled_as_failed(
    client: TestClient,
    tokens: dict[str, str],
    services: Services,
    sources: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = bearer(tokens["admin"])
    folder = write_module(sources, "ancient", system={"python": "<3.0"})
    assert upload(client, tokens["admin"], folder).status_code == 201
    quick = client.put(f"{API}/modules/ancient/status", json={"status": "ENABLED"}, headers=admin)
    assert quick.status_code == 409
    assert quick.headers["content-type"] == PROBLEM
    assert "<3.0" in quick.json()["detail"]
    monkeypatch.setattr(services.settings, "operation_wait_seconds", 0)

    response = client.put(
        f"{API}/modules/ancient/status", json={"status": "ENABLED"}, headers=admin
    )
    assert response.status_code == 202, response.text
    operation = poll(client, response.headers["location"], admin)

    assert operation["status"] == "failed"
    assert "python" in operation["error"]
    assert "<3.0" in operation["error"]
    assert operation["steps"] == [
        {**operation["steps"][0], "name": "check-system", "status": "failed"}
    ]
    module = client.get(f"{API}/modules/ancient", headers=admin).json()
    assert module["status"] == "REGISTERED"
    assert "<3.0" in module["lastError"]


def test_upgrade_rollback_verify_and_delete(
    client: TestClient, tokens: dict[str, str], services: Services, sources: Path
) -> None:
    admin = bearer(tokens["admin"])
    data = services.settings.data_dir
    installed(client, tokens["admin"], sources, "demo", "1.0.0")
    client.put(f"{API}/modules/demo/status", json={"status": "ENABLED"}, headers=admin)
    installed(client, tokens["admin"], sources, "demo", "1.1.0")

    operator = client.post(
        f"{API}/modules/demo/upgrade", json={"version": "1.1.0"}, headers=bearer(tokens["operator"])
    )
    assert operator.status_code == 403
    unknown = client.post(f"{API}/modules/demo/upgrade", json={"version": "9.0.0"}, headers=admin)
    assert unknown.status_code == 404

    upgraded = client.post(f"{API}/modules/demo/upgrade", json={"version": "1.1.0"}, headers=admin)
    assert upgraded.status_code == 200, upgraded.text
    body = upgraded.json()
    assert (body["version"], body["status"], body["previousVersion"]) == (
        "1.1.0",
        "ENABLED",
        "1.0.0",
    )
    same = client.post(f"{API}/modules/demo/upgrade", json={"version": "1.1.0"}, headers=admin)
    assert same.status_code == 409
    assert same.headers["content-type"] == PROBLEM

    rolled = client.post(f"{API}/modules/demo/rollback", headers=admin)
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["status"]) == ("1.0.0", "ENABLED")

    verify = client.get(f"{API}/modules/demo/verify", headers=bearer(tokens["viewer"]))
    assert verify.status_code == 200
    assert verify.json() == {"intact": True, "changes": []}
    handler = data / "modules" / "demo" / "1.0.0" / "handlers" / "main.py"
    handler.chmod(0o644)
    handler.write_text("tampered = True\n")
    (handler.parent / "extra.py").write_text("x = 1\n")
    verify = client.get(f"{API}/modules/demo/verify", headers=admin)
    assert verify.json() == {
        "intact": False,
        "changes": [
            {"path": "handlers/extra.py", "change": "added"},
            {"path": "handlers/main.py", "change": "modified"},
        ],
    }

    deleted = client.delete(f"{API}/modules/demo", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert client.get(f"{API}/modules/demo", headers=admin).status_code == 404
    assert entries(data / "modules") == []
    assert entries(data / "envs") == []


def test_upgrade_and_delete_refusals_name_the_modules(
    client: TestClient, tokens: dict[str, str], sources: Path
) -> None:
    admin = bearer(tokens["admin"])
    installed(client, tokens["admin"], sources, "base", "1.0.0")
    installed(client, tokens["admin"], sources, "base", "2.0.0")
    app = {"name": "app", "version": "1.0.0", "displayName": "App"}
    app["dependencies"] = {"modules": {"base": "^1.0.0"}}  # type: ignore[assignment]
    assert client.post(f"{API}/modules", json={"manifest": app}, headers=admin).status_code == 201

    refused = client.post(f"{API}/modules/base/upgrade", json={"version": "2.0.0"}, headers=admin)
    assert refused.status_code == 409
    assert "app needs base ^1.0.0" in refused.json()["detail"]

    kept = client.delete(f"{API}/modules/base", headers=admin)
    assert kept.status_code == 409
    assert "app" in kept.json()["detail"]
    assert client.get(f"{API}/modules/base", headers=admin).json()["version"] == "1.0.0"

    no_previous = client.post(f"{API}/modules/app/rollback", headers=admin)
    assert no_previous.status_code == 409
