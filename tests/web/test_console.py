"""The web console in a real browser against a real `modhub serve` with the examples.

The scenarios share one server (in file order): the form's checks against the server's;
log in and use the module list; configure, enable, open and disable `vmware-vcenter`;
install a bundle through the dialog.
The main screens are saved to docs/screenshots/ (1280x800) for the README.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Request, Route, expect

from modhub.lifecycle.bundle import pack_folder
from modhub.manifest.checks import value_problem
from modhub.manifest.model import ConfigField
from tests.conftest import PASSWORD, LiveServer
from tests.lifecycle.conftest import wait_for

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
COMPONENT = "/ui/modules/vmware-vcenter/ui/pages/VMwareDashboard.js"


@pytest.fixture(autouse=True)
def within_the_policy(page: Page) -> Iterator[None]:
    """Fail a test whose console trips its Content-Security-Policy (an inline style...)."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield
    assert violations == []


def shot(page: Page, name: str) -> None:
    """Take a screenshot; `make screenshots` (MODHUB_SCREENSHOTS=1) saves it to docs/."""
    folder = (
        DOCS_SCREENSHOTS
        if os.environ.get("MODHUB_SCREENSHOTS") == "1"
        else Path(tempfile.gettempdir()) / "modhub-screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", animations="disabled", caret="hide")


def log_in(page: Page, server: LiveServer, path: str = "/") -> None:
    """Open `path`, get sent to the login form, and log in as admin."""
    page.goto(server.url + path)
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def module_rows(page: Page) -> Locator:
    """The rows of the module table."""
    return page.get_by_role("table", name="Modules").locator("tbody tr")


def row_of(page: Page, name: str) -> Locator:
    """The row of module `name` in the module table."""
    return module_rows(page).filter(has=page.get_by_text(name, exact=True))


def sidebar(page: Page) -> Locator:
    """The console's navigation."""
    return page.get_by_role("navigation", name="Console")


def field_error(page: Page, key: str) -> Locator:
    """The error text shown next to config field `key`."""
    return page.locator(f'[data-field="{key}"] .field-error')


FIELD_CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "number", "validation": {"min": 1, "max": 24}}, [6, 1, 24, 0, 50, 24.5, "5", True]),
    ({"type": "integer", "validation": {"min": 0}}, [3, 2.5, -1, "3"]),
    ({"type": "string", "validation": {"minLength": 2, "maxLength": 4}}, ["ab", "a", "abcde"]),
    ({"type": "string", "validation": {"minLength": 2}}, ["😀😀", "😀"]),
    ({"type": "string", "validation": {"pattern": "^[a-z]+$"}}, ["abc", "ab1", 5]),
    ({"type": "string", "validation": {"pattern": "b"}}, ["abc", "xyz"]),
    ({"type": "password", "validation": {"minLength": 8}}, ["long enough", "short"]),
    ({"type": "boolean"}, [True, False, "yes", 0]),
    (
        {"type": "select", "options": [1, "two", {"value": True, "label": "Yes"}]},
        [1, "two", True, 2, "1", False],
    ),
]


def test_the_client_checks_mirror_the_server(page: Page, console_server: LiveServer) -> None:
    """The form's valueProblem gives the server's value_problem verdict and message."""
    cases = [(spec, value) for spec, values in FIELD_CASES for value in values]
    page.goto(console_server.url + "/login")
    client = page.evaluate(
        """async (cases) => {
            const { valueProblem } = await import("/views/config-form.js");
            return cases.map(([spec, value]) => valueProblem(spec, value));
        }""",
        cases,
    )
    server = [value_problem(ConfigField.model_validate(spec), value) for spec, value in cases]
    assert client == server


def test_login_then_search_and_filter_the_module_list(
    page: Page, console_server: LiveServer
) -> None:
    # A deep link without a session goes to the login form, and back after logging in.
    page.goto(console_server.url + "/modules/hello")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fmodules%2Fhello$"))
    expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()
    shot(page, "login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(console_server.url + "/modules/hello")
    expect(page.get_by_role("heading", name="Hello", level=1)).to_be_visible()

    page.get_by_role("link", name="← Modules").click()
    examples = [
        ("core-auth", "ENABLED"),
        ("hello", "ENABLED"),
        ("notify", "DISABLED"),  # it depends on vmware-vcenter, which needs its config
        ("vmware-vcenter", "DISABLED"),
    ]
    # vmware-vcenter-ts is listed too; it may still be INSTALLING (its Node install is slow).
    expect(module_rows(page)).to_have_count(len(examples) + 1)
    for name, status in examples:
        expect(row_of(page, name)).to_contain_text(status)
        expect(row_of(page, name)).to_contain_text("1.0.0")
    expect(row_of(page, "vmware-vcenter-ts")).to_contain_text("1.0.0")
    shot(page, "modules")

    page.get_by_label("Search").fill("vcenter")
    expect(module_rows(page)).to_have_count(2)
    expect(row_of(page, "vmware-vcenter")).to_have_count(1)
    expect(row_of(page, "vmware-vcenter-ts")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"\?q=vcenter$"))
    page.get_by_label("Search").fill("nothing-like-this")
    expect(page.get_by_text("No module matches these filters.")).to_be_visible()
    page.get_by_label("Search").fill("")
    page.get_by_label("Status").select_option("ENABLED")
    expect(module_rows(page)).to_have_count(2)
    expect(row_of(page, "vmware-vcenter")).to_have_count(0)

    def only_disabled() -> None:
        for name, status in examples:
            expect(row_of(page, name)).to_have_count(1 if status == "DISABLED" else 0)

    page.get_by_label("Status").select_option("DISABLED")
    only_disabled()

    # The filter lives in the URL and the session in the tab: a reload keeps both.
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("DISABLED")
    only_disabled()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()
    page.goto(console_server.url + "/modules")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_configure_enable_open_and_disable_a_module(page: Page, console_server: LiveServer) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))

    def config_puts() -> list[Request]:
        return [r for r in requests if r.method == "PUT" and r.url.endswith("/config")]

    def component_fetches() -> list[Request]:
        return [r for r in requests if r.url.endswith(COMPONENT)]

    log_in(page, console_server, "/modules/vmware-vcenter")
    expect(page.get_by_role("heading", name="VMware vCenter Module")).to_be_visible()
    expect(page.get_by_role("region", name="Dependencies")).to_contain_text("core-auth")
    expect(page.get_by_role("region", name="Dependencies")).to_contain_text("satisfied")
    expect(page.get_by_role("region", name="Audit history")).to_contain_text("module.register")
    expect(page.locator('[data-field="vcenterPassword"] [data-secret-state]')).to_have_text(
        "not set"
    )
    interval = page.get_by_label("Sync Interval (hours)")
    expect(interval).to_have_value("6")

    # Client-side checks: nothing is sent, each error shows next to its field.
    interval.fill("50")
    page.get_by_role("button", name="Save configuration").click()
    expect(field_error(page, "syncInterval")).to_have_text("must be at most 24")
    expect(field_error(page, "vcenterHost")).to_have_text("is required")
    expect(field_error(page, "vcenterPassword")).to_have_text("is required")
    expect(interval).to_have_attribute("aria-invalid", "true")
    expect(interval).to_have_accessible_description(re.compile("must be at most 24"))
    assert config_puts() == []

    # The server's check, with the client's bypassed: the request is rewritten to 50.
    page.get_by_label("vCenter Host").fill("vcenter.lab.local")
    page.get_by_label("vCenter Username").fill("automation")
    page.get_by_label("vCenter Password").fill("s3cret-password")
    interval.fill("12")

    def send_fifty(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["config"]["syncInterval"] = 50
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v1/modules/vmware-vcenter/config", send_fifty)
    with page.expect_response(lambda r: r.request.method == "PUT" and "/config" in r.url) as got:
        page.get_by_role("button", name="Save configuration").click()
    assert got.value.status == 422
    expect(field_error(page, "syncInterval")).to_have_text("must be at most 24")
    expect(field_error(page, "vcenterHost")).to_have_text("")
    expect(page.get_by_text("The server refused 1 field(s) marked below.")).to_be_visible()
    page.unroute("**/api/v1/modules/vmware-vcenter/config")

    page.get_by_role("button", name="Save configuration").click()
    expect(page.get_by_text("Configuration saved.")).to_be_visible()
    sent = json.loads(config_puts()[-1].post_data or "{}")["config"]
    assert sent == {
        "vcenterHost": "vcenter.lab.local",
        "vcenterUsername": "automation",
        "vcenterPassword": "s3cret-password",
        "syncInterval": 12,
    }
    secret = page.locator('[data-field="vcenterPassword"] [data-secret-state]')
    expect(secret).to_have_text("set")
    expect(page.get_by_label("vCenter Password")).to_have_value("")
    expect(page.get_by_label("Sync Interval (hours)")).to_have_value("12")
    expect(page.get_by_role("region", name="Audit history")).to_contain_text("module.config")

    # An empty secret input keeps the stored secret: it is sent as the mask.
    page.get_by_label("Sync Interval (hours)").fill("8")
    with page.expect_response(lambda r: r.request.method == "PUT" and "/config" in r.url) as got:
        page.get_by_role("button", name="Save configuration").click()
    assert got.value.status == 200
    assert json.loads(got.value.request.post_data or "{}")["config"] == {
        **sent,
        "syncInterval": 8,
        "vcenterPassword": "********",
    }
    expect(secret).to_have_text("set")
    page.get_by_role("heading", name="VMware vCenter Module").scroll_into_view_if_needed()
    shot(page, "module-detail")

    # Enable: the dry-run plan is shown first; then the navigation entry appears.
    assert sidebar(page).get_by_role("link", name="VMware").count() == 0
    page.get_by_role("button", name="Enable", exact=True).click()
    plan = page.get_by_role("dialog", name="Enable vmware-vcenter?")
    expect(plan.get_by_role("list", name="Planned changes")).to_have_text(
        re.compile(r"vmware-vcenter\s+DISABLED → ENABLED")
    )
    plan.get_by_role("button", name="Enable", exact=True).click()
    expect(sidebar(page).get_by_role("link", name="VMware")).to_be_visible()
    expect(page.get_by_role("heading", name="VMware vCenter Module")).to_contain_text("ENABLED")

    # Disabling core-auth would cascade to vmware-vcenter: the console asks first.
    page.get_by_role("link", name="core-auth").first.click()
    page.get_by_role("button", name="Disable", exact=True).click()
    cascade = page.get_by_role("dialog", name="Disable core-auth?")
    expect(cascade).to_contain_text("This also changes other modules: vmware-vcenter")
    expect(cascade.get_by_role("listitem")).to_have_count(2)
    shot(page, "cascade-plan")
    cascade.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name="Core Auth")).to_contain_text("ENABLED")

    # The sync job fills the module's store from its fake vCenter; the page lists the VMs.
    token = page.evaluate("sessionStorage.getItem('modhub.token')")
    api = {"Authorization": f"Bearer {token}"}
    jobs = console_server.url + "/api/v1/modules/vmware-vcenter/jobs"
    run = page.request.post(f"{jobs}/sync-inventory/run", headers=api).json()
    runs = console_server.url + f"/api/v1/jobs/runs/{run['id']}"
    wait_for(
        lambda: page.request.get(runs, headers=api).json()["status"] == "succeeded",
        what="the sync-inventory run",
    )

    # The page's component is fetched only when the page opens, and lists the stored VMs.
    assert component_fetches() == []
    with page.expect_request(lambda r: r.url.endswith("/api/v1/m/vmware-vcenter/vms")) as vms:
        sidebar(page).get_by_role("link", name="VMware").click()
    expect(page).to_have_url(console_server.url + "/m/vmware-vcenter/vmware")
    expect(page.get_by_role("heading", name="VMware vCenter", exact=True)).to_be_visible()
    table = page.frame_locator("iframe.module-frame").locator(".module-mount table")
    for vm in ("web-01", "web-02", "db-01"):
        expect(table).to_contain_text(vm)
    assert len(component_fetches()) == 1
    assert vms.value.all_headers()["authorization"].startswith("Bearer ")
    shot(page, "module-page")

    # Disable, with the plan shown: the entry goes and the component is no longer served.
    page.get_by_role("link", name="vmware-vcenter").click()
    page.get_by_role("button", name="Disable", exact=True).click()
    plan = page.get_by_role("dialog", name="Disable vmware-vcenter?")
    expect(plan.get_by_role("list", name="Planned changes")).to_have_text(
        re.compile(r"vmware-vcenter\s+ENABLED → DISABLED")
    )
    plan.get_by_role("button", name="Disable", exact=True).click()
    expect(sidebar(page).get_by_role("link", name="VMware")).to_have_count(0)
    expect(page.get_by_role("heading", name="VMware vCenter Module")).to_contain_text("DISABLED")
    assert page.request.get(console_server.url + COMPONENT).status == 404
    page.goto(console_server.url + "/m/vmware-vcenter/vmware")
    expect(page.get_by_role("heading", name="Page not available")).to_be_visible()


DEMO_MANIFEST = {
    "name": "console-demo",
    "version": "1.0.0",
    "displayName": "Console Demo",
    "description": "Installed from a bundle by the browser tests.",
    "capabilities": {
        "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]},
        "ui": {
            "pages": [{"path": "/demo", "component": "ui/pages/Demo.js", "title": "Console demo"}],
            "navigation": [{"label": "Demo", "path": "/demo", "order": 20}],
        },
    },
}
DEMO_HANDLER = """
def handler(request):
    return {"pong": True, "username": request.user.username}
"""
DEMO_PAGE = """
// Asks its API with a path relative to apiBase; says goodbye to it when unmounted.
let pageContext = null;

export async function mount(element, context) {
  pageContext = context;
  const response = await context.fetch("ping");
  const body = await response.json();
  element.innerHTML = "";
  const line = document.createElement("p");
  line.textContent = `pong for ${body.username} via ${context.apiBase}`;
  element.appendChild(line);
}

export async function unmount(element) {
  element.innerHTML = "";
  await pageContext.fetch("ping?left=1");
}
"""


def demo_bundle(folder: Path) -> Path:
    """Write the console-demo module (a route and a page) and pack it as a .tar.gz."""
    module = folder / "console-demo"
    (module / "handlers").mkdir(parents=True)
    (module / "ui" / "pages").mkdir(parents=True)
    (module / "module.json").write_text(json.dumps(DEMO_MANIFEST, indent=2))
    (module / "handlers" / "ping.py").write_text(DEMO_HANDLER)
    (module / "ui" / "pages" / "Demo.js").write_text(DEMO_PAGE)
    return pack_folder(module, folder / "console-demo-1.0.0.tar.gz")


def test_install_a_bundle_through_the_dialog(
    page: Page, console_server: LiveServer, tmp_path: Path
) -> None:
    bundle = demo_bundle(tmp_path)
    log_in(page, console_server)
    expect(row_of(page, "hello")).to_be_visible()
    page.get_by_role("button", name="Install bundle…").click()
    dialog = page.get_by_role("dialog", name="Install a bundle")
    dialog.get_by_label("Bundle file").set_input_files(bundle)
    dialog.get_by_label("Install and enable it").check()
    with page.expect_request(lambda r: r.url.endswith("/api/v1/modules/bundles")) as upload:
        dialog.get_by_role("button", name="Upload").click()
    assert "multipart/form-data" in upload.value.all_headers()["content-type"]
    expect(dialog.locator("#bundle-progress")).to_have_attribute("value", "100")
    expect(dialog).to_contain_text("Uploaded: 100%")
    expect(dialog.get_by_role("status")).to_contain_text(
        "console-demo 1.0.0 is installed and enabled"
    )
    shot(page, "install-bundle")
    dialog.get_by_role("button", name="Close").click()
    expect(row_of(page, "console-demo")).to_contain_text("ENABLED")

    # Its page mounts on opening (the console makes its fetch of a relative URL, with the
    # token) and unmounts on leaving.
    with page.expect_request(lambda r: r.url.endswith("/api/v1/m/console-demo/ping")) as ping:
        sidebar(page).get_by_role("link", name="Demo").click()
    mount = page.frame_locator("iframe.module-frame").locator(".module-mount")
    expect(mount).to_have_text("pong for admin via /api/v1/m/console-demo")
    assert ping.value.all_headers()["authorization"].startswith("Bearer ")
    with page.expect_request(lambda r: r.url.endswith("/console-demo/ping?left=1")) as goodbye:
        sidebar(page).get_by_role("link", name="Modules").click()
    assert goodbye.value.all_headers()["authorization"].startswith("Bearer ")
    expect(module_rows(page).first).to_be_visible()
    expect(page.locator("iframe.module-frame")).to_have_count(0)
