"""The page component files of enabled modules: what is served, and what never is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modhub.registry import Status
from modhub.services import Services

COMPONENT = "export default function Page() { return 'root page'; }\n"


@pytest.fixture
def root_page_module(services: Services, tmp_path: Path) -> str:
    """Install and enable `ui-root`: its page component sits at the module root, next to
    its handler, its manifest and a hidden file."""
    folder = tmp_path / "ui-root"
    (folder / "assets").mkdir(parents=True)
    manifest = {
        "name": "ui-root",
        "version": "1.0.0",
        "displayName": "UI at the root",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "main.py"}]},
            "ui": {"pages": [{"path": "/root", "component": "Page.js", "title": "Root"}]},
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text("SECRET_ALGORITHM = 1\ndef handler(request):\n    return {}\n")
    (folder / "Page.js").write_text(COMPONENT)
    (folder / "helpers.js").write_text("export const x = 1;\n")
    (folder / "strings.json").write_text('{"hello": "Hello"}')
    (folder / ".env").write_text("TOKEN=not-for-browsers\n")
    (folder / "style.css").write_text("body {}\n")
    (folder / "page.html").write_text("<script>parent.steal(sessionStorage)</script>")
    (folder / "page.xhtml").write_text("<html/>")
    (folder / "icon.svg").write_text("<svg/>")
    (folder / "assets" / "logo.svg").write_text("<svg/>")  # below the root: not UI folder
    services.lifecycle.add_bundle(folder, actor="test")
    services.lifecycle.set_status("ui-root", Status.ENABLED, actor="test")
    assert services.registry.get("ui-root").status == Status.ENABLED
    return "/ui/modules/ui-root"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("Page.js", "text/javascript"),
        ("helpers.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ],
)
def test_web_assets_of_the_ui_folder_are_served(
    client: TestClient, root_page_module: str, path: str, content_type: str
) -> None:
    response = client.get(f"{root_page_module}/{path}")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["x-content-type-options"] == "nosniff"
    # Imported by the page's opaque-origin frame; opened as a document, inert.
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["content-security-policy"].startswith("sandbox; default-src 'none'")


@pytest.mark.parametrize(
    "path",
    [
        "main.py",
        "module.json",
        ".env",
        "MAIN.PY",
        "missing.js",
        "assets/logo.svg",
        "page.html",
        "PAGE.HTML",
        "page.xhtml",
        "strings.json",
    ],
)
def test_code_the_manifest_and_hidden_files_are_never_served(
    client: TestClient, root_page_module: str, path: str
) -> None:
    response = client.get(f"{root_page_module}/{path}")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "not-for-browsers" not in response.text
    assert "SECRET_ALGORITHM" not in response.text


def test_nothing_is_served_once_the_module_is_disabled(
    services: Services, client: TestClient, root_page_module: str
) -> None:
    assert client.get(f"{root_page_module}/Page.js").status_code == 200
    services.lifecycle.set_status("ui-root", Status.DISABLED, actor="test")

    assert client.get(f"{root_page_module}/Page.js").status_code == 404


def test_the_console_sends_its_content_security_policy(client: TestClient) -> None:
    policy = client.get("/modules").headers["content-security-policy"]

    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy
    assert "'unsafe-inline'" not in policy


def test_the_page_frame_is_an_opaque_origin_without_network(client: TestClient) -> None:
    response = client.get("/ui/page-frame")

    policy = response.headers["content-security-policy"]
    assert response.headers["content-type"].startswith("text/html")
    assert policy.startswith("sandbox allow-scripts allow-forms;")
    assert "allow-same-origin" not in policy
    assert "connect-src 'none'" in policy
