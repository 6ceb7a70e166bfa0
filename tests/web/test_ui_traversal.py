"""A module's UI files are served from its UI folder only: no path that climbs out of it
(`..`, `%2e%2e`, encoded slashes, backslashes, absolute paths) reaches another file of the
module, even a servable one; a hidden file inside it is never served either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modhub.registry import Status
from modhub.services import Services

SECRET = "export const key = 'not-in-the-ui-folder';\n"
BASE = "/ui/modules/ui-deep"


@pytest.fixture
def deep_module(services: Services, tmp_path: Path) -> str:
    """Install and enable `ui-deep`: its page in ui/pages, a script outside it (lib/)."""
    folder = tmp_path / "ui-deep"
    for sub in ("ui/pages", "lib", "handlers"):
        (folder / sub).mkdir(parents=True)
    manifest = {
        "name": "ui-deep",
        "version": "1.0.0",
        "displayName": "UI in a folder",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/p", "handler": "handlers/main.py"}]},
            "ui": {"pages": [{"path": "/deep", "component": "ui/pages/Page.js", "title": "D"}]},
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest))
    (folder / "handlers" / "main.py").write_text("def handler(request):\n    return {}\n")
    (folder / "ui" / "pages" / "Page.js").write_text("export default function P() {}\n")
    (folder / "lib" / "secret.js").write_text(SECRET)
    (folder / "ui" / "secret.js").write_text(SECRET)  # above the UI folder: not in it
    (folder / "ui" / "pages" / ".hidden.js").write_text(SECRET)  # hidden: never served
    services.lifecycle.add_bundle(folder, actor="test")
    services.lifecycle.set_status("ui-deep", Status.ENABLED, actor="test")
    return BASE


CLIMBS = [
    "ui/pages/%2e%2e/%2e%2e/lib/secret.js",
    "ui/pages/%2E%2E/%2E%2E/lib/secret.js",
    "ui/pages/..%2f..%2flib%2fsecret.js",
    "ui/pages/..%2F..%2Flib%2Fsecret.js",
    "ui%2fpages%2f%2e%2e%2f%2e%2e%2flib%2fsecret.js",
    "ui/pages/%2e%2e/secret.js",
    "ui/pages/.%2e/.%2e/lib/secret.js",
    "ui/pages/%2e%2e%5c%2e%2e%5clib%5csecret.js",
    "ui/pages/..\\..\\lib\\secret.js",
    "%2flib/secret.js",
    "ui/pages/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "lib/secret.js",
    "ui/secret.js",
    "ui/pages/.hidden.js",
    "ui/pages/%2ehidden.js",
]


def test_no_path_climbs_out_of_the_ui_folder(client: TestClient, deep_module: str) -> None:
    # One module for every path: installing it is the slow part.
    served: dict[str, int] = {}
    for path in CLIMBS:
        response = client.get(f"{deep_module}/{path}")
        if response.status_code != 404 or "not-in-the-ui-folder" in response.text:
            served[path] = response.status_code
    assert served == {}
    assert client.get(f"{deep_module}/ui/pages/Page.js").status_code == 200
