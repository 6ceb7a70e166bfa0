"""The console's Cluster page lists the nodes: the one answering, and another node on the
same database that stopped heartbeating (a real browser against a real server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from modhub.cluster.nodes import NodeRegistry, NodeReport
from modhub.db import Database
from modhub.db.models import utcnow
from modhub.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server
from tests.web.test_console import log_in, within_the_policy  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server on SQLite, and a node of its database that went silent an hour ago."""
    server = start_server(Path(tmp_path_factory.mktemp("cluster")) / "data")
    db = Database(Settings(data_dir=server.data_dir).db_url)
    silent = NodeRegistry(
        db,
        heartbeat=timedelta(seconds=5),
        report=lambda: NodeReport(
            materialized=["hello@1.0.0"],
            last_error="requirement x could not be installed on node node-b",
        ),
        address="http://10.0.0.2:4000",
        clock=lambda: utcnow() - timedelta(hours=1),
    )
    silent.host = "node-b.example"
    silent.register()
    db.dispose()
    yield server
    stop_server(server)


def test_the_cluster_page_lists_the_nodes(page: Page, server: LiveServer) -> None:
    log_in(page, server, "/modules")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Cluster").click()
    expect(page).to_have_url(server.url + "/cluster")
    expect(page.get_by_role("heading", name="Cluster", level=1)).to_be_visible()
    rows = page.get_by_role("table", name="Nodes").locator("tbody tr")
    expect(rows).to_have_count(2)
    this = rows.filter(has_text="(this node)")
    expect(this.locator(".badge")).to_have_text("up")
    expect(this).to_contain_text(f"pid {server.process.pid}")
    expect(this).to_contain_text(server.url)
    other = rows.filter(has_text="node-b.example")
    expect(other.locator(".badge")).to_have_text("gone")
    expect(other).to_contain_text("hello@1.0.0")
    expect(other).to_contain_text("requirement x could not be installed on node node-b")
    expect(page.get_by_text("2 node(s), 1 up")).to_be_visible()
    expect(
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Cluster")
    ).to_have_attribute("aria-current", "page")


def test_the_cluster_page_opens_at_its_address(page: Page, server: LiveServer) -> None:
    log_in(page, server, "/cluster")
    expect(page.get_by_role("table", name="Nodes").locator("tbody tr")).to_have_count(2)
