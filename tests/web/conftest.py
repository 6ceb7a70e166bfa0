"""A real `modhub serve` with the example modules, and Debian's Chromium through Playwright.

The browser tests skip with the reason when Chromium (/usr/bin/chromium) is missing,
except under MODHUB_REQUIRE_SERVICES=1 (CI), where they fail instead. Playwright itself is
a dev dependency (`.[dev]`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from tests.conftest import PASSWORD, SECRET, LiveServer, free_port, service_missing, stop_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "modules"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


def serve_examples(folder: Path, examples: Path) -> LiveServer:
    """Start `modhub serve --examples EXAMPLES` on SQLite in `folder`, user admin / PASSWORD.

    MODHUB_OPERATION_WAIT_SECONDS=0 makes every lifecycle call answer 202 with an operation,
    so that the console's polling of operations is what the tests exercise.
    """
    data_dir = folder / "data"
    data_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(data_dir),
            "MODHUB_SECRET_KEY": SECRET,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
            "MODHUB_OPERATION_WAIT_SECONDS": "0",
        }
    )
    log = folder / "serve.log"
    command = [sys.executable, "-m", "modhub", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--examples", str(examples)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"modhub serve exited: {server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"modhub serve did not answer in 60 s: {server.output()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Yield `modhub serve --examples examples/modules` (see serve_examples)."""
    server = serve_examples(tmp_path_factory.mktemp("console"), EXAMPLES)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Yield Debian's Chromium, launched by Playwright (which cannot download browsers here)."""
    if not CHROMIUM.is_file():
        service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """Yield a fresh page (its own session storage) at 1280x800, English dates."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    yield new_page
    context.close()
    assert not errors, f"uncaught errors in the console: {errors}"
