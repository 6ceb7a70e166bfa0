"""A hostile module page in Chromium: it never gets the console's token, and reaches only
its own module's routes, through the console's bridge.

One server with two modules beside each other: `evil-page`, whose page attacks, and
`sibling`, whose route holds what it must not read. The page records every attempt in
its frame; the test reads the record, the network and the audit log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tests.conftest import PASSWORD, LiveServer, stop_server
from tests.web.conftest import serve_examples
from tests.web.test_console import log_in

SIBLING_SECRET = "sibling-secret-value"
EVIL_PAGE = "/m/evil-page/evil"
EVIL_MANIFEST = {
    "name": "evil-page",
    "version": "1.0.0",
    "displayName": "Evil page",
    "capabilities": {
        "api": {
            "routes": [
                {"method": "GET", "path": "/own", "handler": "handlers/own.py"},
                {"method": "POST", "path": "/bounce", "handler": "handlers/bounce.py"},
            ]
        },
        "ui": {
            "pages": [{"path": "/evil", "component": "ui/Evil.js", "title": "Evil page"}],
            "navigation": [{"label": "Evil", "path": "/evil"}],
        },
    },
}
SIBLING_MANIFEST = {
    "name": "sibling",
    "version": "1.0.0",
    "displayName": "Sibling",
    "capabilities": {
        "api": {"routes": [{"method": "GET", "path": "/secret", "handler": "handlers/secret.py"}]}
    },
}
OWN_HANDLER = """
def handler(request):
    return {"user": request.user.username, "authorization": request.headers.get("authorization")}
"""
# A 307 keeps the method and the body: followed by the console, it would create the user.
BOUNCE_HANDLER = """
from modhub.sdk import Response


def handler(request):
    return Response(status=307, headers={"Location": "/api/v1/users"})
"""
SIBLING_HANDLER = f"""
def handler(request):
    return {{"secret": "{SIBLING_SECRET}"}}
"""
# The page of evil-page: renders its own route, then attacks and records every attempt.
EVIL_JS = (Path(__file__).parent / "hostile_page.js").read_text()
# Opened as a document on the console's origin, this would read the token (the page's own
# file types are served without one).
EVIL_SVG = """<svg xmlns="http://www.w3.org/2000/svg"><script>
fetch("/api/v1/m/evil-page/own?svg=" + sessionStorage.getItem("modhub.token"));
</script></svg>"""
ATTACKS = (
    "sessionStorage",
    "localStorage",
    "parent.sessionStorage",
    "top.document",
    "document.cookie",
    "token from the own route",
    "bridge POST /users",
    "bridge POST absolute /users",
    "bridge POST ../../users",
    "bridge POST encoded slash",
    "bridge POST encoded dots",
    "bridge POST backslash",
    "bridge POST tab-hidden dots",
    "bridge POST via redirect",
    "bridge sibling",
    "bridge ../sibling",
    "bridge other host",
    "direct POST /users",
    "direct login",
    "direct sibling",
    "navigate top",
    "popup",
    "port POST /users",
    "port dot segments",
    "port sibling",
    "port method trick",
)
# The redirect is refused by fetch itself (redirect: "error"), the others by the bridge.
REFUSED_BY_THE_BRIDGE = [
    a for a in ATTACKS if a.startswith(("bridge", "port")) and a != "bridge POST via redirect"
]


def write_module(folder: Path, manifest: dict[str, Any], files: dict[str, str]) -> None:
    """Write a module folder: its manifest and `files` (relative path → text)."""
    folder.mkdir(parents=True)
    (folder / "module.json").write_text(json.dumps(manifest, indent=2))
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Yield `modhub serve` with `evil-page` and `sibling`, both ENABLED."""
    root = tmp_path_factory.mktemp("hostile")
    modules = root / "modules"
    write_module(
        modules / "evil-page",
        EVIL_MANIFEST,
        {
            "handlers/own.py": OWN_HANDLER,
            "handlers/bounce.py": BOUNCE_HANDLER,
            "ui/Evil.js": EVIL_JS,
            "ui/evil.html": "<script>parent.steal(sessionStorage)</script>",
            "ui/evil.svg": EVIL_SVG,
            "ui/strings.json": '{"hello": "Hello"}',
        },
    )
    write_module(modules / "sibling", SIBLING_MANIFEST, {"handlers/secret.py": SIBLING_HANDLER})
    server = serve_examples(root, modules)
    yield server
    stop_server(server)


def admin_headers(server: LiveServer) -> dict[str, str]:
    """Log in as admin over HTTP; return the Authorization header."""
    answer = httpx.post(
        server.url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    return {"Authorization": f"Bearer {answer.json()['accessToken']}"}


def test_a_hostile_page_gets_neither_the_token_nor_another_route(
    page: Page, hostile_server: LiveServer
) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    log_in(page, hostile_server, EVIL_PAGE)
    token = page.evaluate("sessionStorage.getItem('modhub.token')")
    assert token

    frame = page.frame_locator("iframe.module-frame")
    expect(frame.locator("#own")).to_have_text("own route answered for admin")
    results: dict[str, dict[str, str]] = json.loads(frame.locator("#results").inner_text())

    succeeded = {name: results[name] for name in ATTACKS if results[name]["ok"]}
    assert succeeded == {}
    for name in REFUSED_BY_THE_BRIDGE:
        assert "context.fetch refused" in results[name]["error"], (name, results[name])
    assert results["own route, encoded query"]["value"].startswith("HTTP 200")
    assert results["port forged header"]["value"].startswith("HTTP 200")
    record = json.dumps(results)
    assert token not in record
    assert SIBLING_SECRET not in record
    assert "modhub:init" in record  # the page saw the console's messages: none with the token

    # Nothing the page did reached /users or the sibling, and the console stayed put.
    expect(page).to_have_url(hostile_server.url + EVIL_PAGE)
    reached = [r.url for r in requests if re.search(r"/api/v1/(users|m/sibling)", r.url)]
    assert reached == []
    bounced = [r for r in requests if r.url.endswith("/api/v1/m/evil-page/bounce")]
    assert len(bounced) == 1  # the bridge called the route once, and did not follow its 307
    forged = [r for r in requests if r.url.endswith("/own") and r.method != "GET"]
    assert forged == []
    assert all("x-http-method-override" not in r.headers for r in requests)

    headers = admin_headers(hostile_server)
    audit = httpx.get(hostile_server.url + "/api/v1/audit", headers=headers).json()
    users = [(e["action"], e["target"]) for e in audit["items"] if e["action"].startswith("user.")]
    assert users == [("user.create", "admin")]
    mallory = {"username": "mallory", "password": "mallory-pass-1"}
    assert httpx.post(hostile_server.url + "/api/v1/auth/login", json=mallory).status_code == 401


def test_a_page_is_an_opaque_origin_even_when_opened_alone(
    page: Page, hostile_server: LiveServer
) -> None:
    log_in(page, hostile_server)
    frame = httpx.get(hostile_server.url + "/ui/page-frame")
    assert frame.headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert "allow-same-origin" not in frame.headers["content-security-policy"]
    page.goto(hostile_server.url + "/ui/page-frame")
    assert page.evaluate("origin") == "null"
    storage = "(() => { try { return sessionStorage.length } catch { return -1 } })()"
    assert page.evaluate(storage) == -1


def test_module_ui_folders_serve_no_documents(page: Page, hostile_server: LiveServer) -> None:
    files = hostile_server.url + "/ui/modules/evil-page/ui"
    for document in ("evil.html", "strings.json"):
        assert httpx.get(f"{files}/{document}").status_code == 404
    script = httpx.get(f"{files}/Evil.js")
    assert script.status_code == 200
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["access-control-allow-origin"] == "*"

    # An SVG is an image, but opened as a document it may run script: it runs sandboxed.
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    log_in(page, hostile_server)
    page.goto(f"{files}/evil.svg")
    page.goto(hostile_server.url + "/modules")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert [r.url for r in requests if "svg=" in r.url] == []
