"""The console navigation lists a module's page only to callers holding every permission
the page declares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.registry import Status
from modhub.services import Services

NAV = "/api/v1/ui/navigation"


@pytest.fixture
def nav_module(services: Services, tmp_path: Path) -> None:
    """Enable `navmod`: an open page, one needing navmod:read, one needing both."""
    folder = tmp_path / "navmod"
    (folder / "ui").mkdir(parents=True)
    pages: list[dict[str, Any]] = [
        {"path": "/open", "component": "ui/Open.js", "title": "Open"},
        {
            "path": "/read",
            "component": "ui/Read.js",
            "title": "Read",
            "permissions": ["navmod:read"],
        },
        {
            "path": "/both",
            "component": "ui/Both.js",
            "title": "Both",
            "permissions": ["navmod:read", "navmod:write"],
        },
    ]
    manifest = {
        "name": "navmod",
        "version": "1.0.0",
        "displayName": "Navigation",
        "permissions": ["navmod:read", "navmod:write"],
        "capabilities": {
            "ui": {
                "pages": pages,
                "navigation": [
                    {"label": p["title"], "path": p["path"], "order": i}
                    for i, p in enumerate(pages)
                ],
            }
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest))
    for page in pages:
        (folder / str(page["component"])).write_text("export default function P() {}\n")
    services.lifecycle.add_bundle(folder, actor="test")
    services.lifecycle.set_status("navmod", Status.ENABLED, actor="test")


def labels(client: TestClient, token: str) -> list[str]:
    response = client.get(NAV, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return [entry["label"] for entry in response.json() if entry["module"] == "navmod"]


def test_a_user_lacking_a_pages_permission_does_not_see_it(
    services: Services, client: TestClient, tokens: dict[str, str], nav_module: None
) -> None:
    assert labels(client, tokens["viewer"]) == ["Open"]
    assert labels(client, tokens["admin"]) == ["Open", "Read", "Both"]

    services.auth.grant("operator", "navmod:read")
    assert labels(client, tokens["operator"]) == ["Open", "Read"]  # not both of Both's

    services.auth.grant("operator", "navmod:write")
    assert labels(client, tokens["operator"]) == ["Open", "Read", "Both"]


def test_navigation_needs_a_token(client: TestClient, nav_module: None) -> None:
    assert client.get(NAV).status_code == 401
