"""A platform with real module workers for the metrics tests (one per module file and
database: SQLite and PostgreSQL), and reading a scrape."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from modhub.api.app import create_app
from modhub.auth import credentials
from modhub.registry import Status
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import (
    PASSWORD,
    SECRET,
    bearer,
    emptied,
    session_database,
    write_module_folder,
)

ACTOR = "tester"
MODULE = "metered"
HANDLERS = {
    "handlers/item.py": ("def handler(request):\n    return {'id': request.path_params['id']}\n"),
    "handlers/crash.py": "import os\n\n\ndef handler(request):\n    os._exit(3)\n",
    "handlers/keep.py": (
        "def handler(request):\n"
        "    request.store.set('seen', {'by': request.user.username})\n"
        "    return request.store.get('seen')\n"
    ),
    "jobs/tick.py": "def handler(context):\n    return {'ticked': context.job}\n",
}
ROUTES = [
    {"method": "GET", "path": "/items/:id", "handler": "handlers/item.py"},
    {"method": "POST", "path": "/crash", "handler": "handlers/crash.py"},
    {"method": "GET", "path": "/keep", "handler": "handlers/keep.py"},
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def write_module(root: Path, name: str, **extra: Any) -> Path:
    """Write module `name` with the routes, a job and the handlers above."""
    return write_module_folder(root, name, ROUTES, HANDLERS, **extra)


@dataclass
class Platform:
    services: Services
    client: TestClient
    headers: dict[str, dict[str, str]]  # admin, viewer, metrics (an API token)
    sources: Path

    def scrape(self) -> Samples:
        """Return every sample of a scrape of /metrics, by name and labels."""
        response = self.client.get("/metrics", headers=self.headers["admin"])
        assert response.status_code == 200, response.text
        return parse(response.text)


def parse(text: str) -> Samples:
    """Return the samples of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value (0 when absent: a counter not incremented yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Yield a served platform with module `metered` enabled and three callers."""
    root = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        if request.param == "sqlite":
            yield from _platform(root, f"sqlite:///{root / 'modhub.db'}")
        else:
            with session_database("modhub_metrics") as database:
                yield from _platform(root, emptied(database))


def _platform(root: Path, url: str) -> Iterator[Platform]:
    settings = Settings(
        data_dir=root / "data",
        database_url=url,
        secret_key=SECRET,
        admin_password=PASSWORD,
        pip_offline=True,
        operation_wait_seconds=120,
    )
    services = Services.start(settings)
    sources = root / "sources"
    services.lifecycle.add_bundle(write_module(sources, MODULE), actor=ACTOR)
    done, _, _ = services.lifecycle.set_status(MODULE, Status.ENABLED, actor=ACTOR)
    assert done
    for role in ("admin", "viewer", "metrics"):
        services.auth.create_user(f"{role}-user", role, PASSWORD)
    try:
        with TestClient(create_app(services=services)) as client:
            headers = {}
            for role in ("admin", "viewer"):
                response = client.post(
                    "/api/v1/auth/login", json={"username": f"{role}-user", "password": PASSWORD}
                )
                headers[role] = bearer(response.json()["accessToken"])
            headers["metrics"] = bearer(services.auth.create_api_token("metrics-user", "prom"))
            yield Platform(services, client, headers, sources)
    finally:
        services.close()
