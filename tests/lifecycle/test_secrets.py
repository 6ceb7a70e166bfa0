"""A secret stays sealed through an upgrade whose manifest no longer calls it a secret.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from modhub.services import Services
from tests.conftest import bearer

API = "/api/v1"
CLEAR = "sk-live-PLAINTEXT-4242"


def victim(version: str, key_type: str) -> dict[str, Any]:
    """Return a bare manifest of `victim` whose `apiKey` field has type `key_type`."""
    return {
        "name": "victim",
        "version": version,
        "displayName": "Victim",
        "config": {"schema": {"apiKey": {"type": key_type}, "region": {"type": "string"}}},
    }


def raw_config(services: Services) -> str:
    """Return victim's `modules.config` column as stored, as text."""
    with services.db.read() as session:
        value = session.execute(
            text("SELECT config FROM modules WHERE name = 'victim'")
        ).scalar_one()
    return value if isinstance(value, str) else json.dumps(value)


def test_upgrade_to_a_plain_string_field_keeps_the_secret_sealed(
    client: TestClient, tokens: dict[str, str], services: Services
) -> None:
    admin, operator = bearer(tokens["admin"]), bearer(tokens["operator"])
    viewer = bearer(tokens["viewer"])
    for manifest in (victim("1.0.0", "password"), victim("1.1.0", "string")):
        response = client.post(f"{API}/modules", json={"manifest": manifest}, headers=admin)
        assert response.status_code == 201, response.text
    enabled = client.put(f"{API}/modules/victim/status", json={"status": "ENABLED"}, headers=admin)
    assert enabled.status_code == 200, enabled.text
    stored = client.put(
        f"{API}/modules/victim/config",
        json={"config": {"apiKey": CLEAR, "region": "eu"}},
        headers=operator,
    )
    assert stored.status_code == 200, stored.text
    assert CLEAR not in raw_config(services)

    plan = client.post(
        f"{API}/modules/victim/upgrade",
        params={"dryRun": "true"},
        json={"version": "1.1.0"},
        headers=admin,
    )
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert (body["dryRun"], body["from"], body["to"]) == (True, "1.0.0", "1.1.0")
    (note,) = body["config"]
    assert (note["key"], note["change"]) == ("apiKey", "stays-sealed")
    assert "stays sealed and masked until an operator sets it again" in note["message"]
    assert client.get(f"{API}/modules/victim", headers=viewer).json()["version"] == "1.0.0"

    upgraded = client.post(
        f"{API}/modules/victim/upgrade", json={"version": "1.1.0"}, headers=admin
    )
    assert upgraded.status_code == 200, upgraded.text

    seen = client.get(f"{API}/modules/victim", headers=viewer)
    assert seen.status_code == 200
    assert seen.json()["version"] == "1.1.0"
    assert seen.json()["config"] == {"apiKey": "********", "region": "eu"}
    assert CLEAR not in seen.text
    assert CLEAR not in raw_config(services)
    assert services.registry.config_for_code("victim")["apiKey"] == CLEAR  # the module still has it

    # The console sends the masked config back: the sealed value is kept, not "********".
    kept = client.put(
        f"{API}/modules/victim/config",
        json={"config": {"apiKey": "********", "region": "us"}},
        headers=operator,
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["config"] == {"apiKey": "********", "region": "us"}
    assert CLEAR not in raw_config(services)
    assert services.registry.config_for_code("victim")["apiKey"] == CLEAR

    # Set again by an operator, it is stored as the new manifest says: a plain string.
    reset = client.put(
        f"{API}/modules/victim/config",
        json={"config": {"apiKey": "public-id", "region": "us"}},
        headers=operator,
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["config"] == {"apiKey": "public-id", "region": "us"}
    assert client.get(f"{API}/modules/victim", headers=viewer).json()["config"]["apiKey"] == (
        "public-id"
    )
    assert "public-id" in raw_config(services)


def test_a_sealed_value_survives_an_upgrade_and_a_rollback(
    client: TestClient, tokens: dict[str, str], services: Services
) -> None:
    admin = bearer(tokens["admin"])
    for manifest in (victim("1.0.0", "password"), victim("1.1.0", "string")):
        client.post(f"{API}/modules", json={"manifest": manifest}, headers=admin)
    client.put(f"{API}/modules/victim/config", json={"config": {"apiKey": CLEAR}}, headers=admin)

    for step in ("upgrade", "rollback"):
        body = {"version": "1.1.0"} if step == "upgrade" else None
        response = client.post(f"{API}/modules/victim/{step}", json=body, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["config"] == {"apiKey": "********"}
        assert CLEAR not in raw_config(services)
        assert services.registry.config_for_code("victim")["apiKey"] == CLEAR
