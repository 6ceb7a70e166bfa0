"""The module page shows what the module keeps in its store, and the removal dialog warns
that the stored data goes too (a real browser against a real server with the examples)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from modhub.db import Database
from modhub.settings import Settings
from modhub.store import ModuleStore
from tests.conftest import LiveServer, stop_server
from tests.web.conftest import EXAMPLES, serve_examples
from tests.web.test_console import log_in, within_the_policy  # noqa: F401  (fixture)

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with core-auth and vmware-vcenter (no dependent, such as notify, that would
    refuse vmware-vcenter's removal), and three keys in vmware-vcenter's store."""
    folder = tmp_path_factory.mktemp("storage")
    for name in ("core-auth", "vmware-vcenter"):
        shutil.copytree(EXAMPLES / name, folder / "examples" / name)
    server = serve_examples(folder, folder / "examples")
    db = Database(Settings(data_dir=server.data_dir).db_url)
    store = ModuleStore(db)
    for index in range(3):
        store.set("vmware-vcenter", f"vm/{index}", {"name": f"vm-{index}"}, quota_bytes=MB)
    for half in ("big/0", "big/1"):  # 0.75 MB each
        store.set("core-auth", half, "x" * (3 * MB // 4), quota_bytes=64 * MB)
    db.dispose()
    yield server
    stop_server(server)


def test_the_module_page_shows_its_storage(page: Page, server: LiveServer) -> None:
    log_in(page, server, "/modules/vmware-vcenter")
    overview = page.get_by_role("region", name="Overview")
    expect(overview).to_contain_text("Storage")
    expect(overview.locator(".storage")).to_have_text("3 keys, < 0.01 of 64 MB")

    page.goto(server.url + "/modules/core-auth")
    expect(page.get_by_role("region", name="Overview").locator(".storage")).to_have_text(
        "2 keys, 1.5 of 64 MB"
    )


def test_the_removal_dialog_says_the_stored_data_goes(page: Page, server: LiveServer) -> None:
    log_in(page, server, "/modules/vmware-vcenter")
    page.get_by_role("button", name="Remove").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("its stored data (3 keys)")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("region", name="Overview").locator(".storage")).to_have_text(
        "3 keys, < 0.01 of 64 MB"
    )
