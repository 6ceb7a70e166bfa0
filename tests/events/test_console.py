"""The console's module page shows what a module emits and subscribes to, and its recent
deliveries: a real `modhub serve` with the example modules (its own dispatcher delivering),
and Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD, LiveServer, bearer, stop_server
from tests.jobs.conftest import wait_for
from tests.web.conftest import EXAMPLES, browser, page, serve_examples

__all__ = ["browser", "page"]  # fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Yield `modhub serve --examples` with core-auth, vmware-vcenter and notify."""
    folder = tmp_path_factory.mktemp("events-console")
    examples = folder / "examples"
    for name in ("core-auth", "vmware-vcenter", "notify"):
        shutil.copytree(EXAMPLES / name, examples / name)
    live = serve_examples(folder, examples)
    yield live
    stop_server(live)


def test_the_module_page_shows_events_and_deliveries(page: Page, server: LiveServer) -> None:
    login = httpx.post(
        server.url + "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    token = login.json()["accessToken"]
    with httpx.Client(base_url=server.url + "/api/v1", headers=bearer(token), timeout=30) as api:
        config = {"vcenterHost": "vc", "vcenterUsername": "u", "vcenterPassword": "p"}
        assert api.put("/modules/vmware-vcenter/config", json={"config": config}).is_success
        enabled = api.put(
            "/modules/notify/status", params={"cascade": "true"}, json={"status": "ENABLED"}
        )
        assert enabled.status_code in (200, 202), enabled.text
        wait_for(lambda: api.get("/modules/notify").json()["status"] == "ENABLED", what="enable")
        # The route table follows the registry within the sync's poll.
        wait_for(lambda: api.get("/m/vmware-vcenter/vms").status_code == 200, what="routes")
        created = api.post("/m/vmware-vcenter/vms", json={"name": "db-01"})
        assert created.status_code == 201, created.text

        def delivered() -> bool:
            items = api.get("/events", params={"subscriber": "notify"}).json()["items"]
            return bool(items) and items[0]["deliveries"][0]["status"] == "delivered"

        wait_for(delivered, what="the delivery to notify")
        notes = api.get("/m/notify/notifications").json()["items"]
        assert [n["message"].split(" was")[0] for n in notes] == [
            f"VM db-01 ({created.json()['id']})"
        ]

    page.goto(server.url + "/login?next=%2Fmodules%2Fnotify")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    events = page.get_by_role("region", name="Events")
    expect(events.get_by_role("table", name="Events this module subscribes to")).to_contain_text(
        "vmware-vcenter/vm.created"
    )
    deliveries = events.get_by_role("table", name="Recent deliveries")
    expect(deliveries.locator("tbody tr")).to_have_count(1)
    expect(deliveries).to_contain_text("delivered")
    page.goto(server.url + "/modules/vmware-vcenter")
    expect(
        page.get_by_role("region", name="Events").get_by_role(
            "table", name="Events this module emits"
        )
    ).to_contain_text("vm.created")
