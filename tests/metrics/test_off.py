"""MODHUB_METRICS=off: /metrics answers 404 and nothing is recorded. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from modhub import metrics
from modhub.api.app import create_app
from modhub.db import Database, upgrade
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import PASSWORD, bearer


@pytest.fixture
def off(settings: Settings) -> Iterator[tuple[TestClient, Services]]:
    if not settings.embedded:
        db = Database(settings.db_url)
        upgrade(db.engine)
        db.dispose()
    services = Services.start(settings.model_copy(update={"metrics": False}))
    try:
        with TestClient(create_app(services=services)) as client:
            yield client, services
    finally:
        services.close()
        metrics.configure(enabled=True)  # the process's other apps record


def test_metrics_off_answers_404_and_records_nothing(off: tuple[TestClient, Services]) -> None:
    client, services = off
    services.auth.create_user("root", "admin", PASSWORD)
    token = bearer(services.auth.create_api_token("root"))
    labels = {"route": "/api/v1/modules/{name}", "method": "GET", "status": "404"}
    before = REGISTRY.get_sample_value("modhub_http_requests_total", labels) or 0
    assert client.get("/api/v1/modules/absent", headers=token).status_code == 404
    assert (REGISTRY.get_sample_value("modhub_http_requests_total", labels) or 0) == before
    response = client.get("/metrics", headers=token)
    assert response.status_code == 404
    assert "MODHUB_METRICS=off" in response.json()["detail"]
    assert client.get("/metrics").status_code == 401  # still not for anyone
    assert client.get("/readyz").status_code == 200
