"""What `modhub serve` builds at start-up leaves the garbage collector's full collections
(`create_app(freeze_startup=True)`); an app built for a test does not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from modhub.api.app import create_app
from modhub.services import Services


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process collects everything again


@pytest.mark.usefixtures("unfrozen")
def test_a_served_app_freezes_what_its_start_built(services: Services) -> None:
    with TestClient(create_app(services=services, freeze_startup=True)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # the app, its models, the services


@pytest.mark.usefixtures("unfrozen")
def test_an_app_built_for_a_test_freezes_nothing(services: Services) -> None:
    with TestClient(create_app(services=services)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
