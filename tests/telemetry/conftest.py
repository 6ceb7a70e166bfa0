"""A served platform with a module of real workers, its log lines captured as JSON, and,
for the tracing tests, its spans in the OpenTelemetry SDK's in-memory exporter.

One platform per test module and database (SQLite and PostgreSQL), as in tests/metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modhub.api.app import create_app
from modhub.auth import credentials
from modhub.registry import Status
from modhub.services import Services
from modhub.settings import Settings
from modhub.telemetry import tracing
from modhub.telemetry.logs import JsonFormatter
from tests.conftest import (
    PASSWORD,
    SECRET,
    bearer,
    emptied,
    session_database,
    write_module_folder,
)

ACTOR = "tester"
MODULE = "watched"
HANDLERS = {
    "handlers/hello.py": (
        "def handler(request):\n"
        "    request.logger.info('hello from the handler')\n"
        "    return {'requestId': request.request_id}\n"
    ),
    "handlers/ahello.py": (
        "import asyncio\n\n\nasync def handler(request):\n"
        "    await asyncio.sleep(0)\n"
        "    request.logger.info('hello from the async handler')\n"
        "    return {'requestId': request.request_id}\n"
    ),
    "handlers/boom.py": "def handler(request):\n    raise RuntimeError('boom on purpose')\n",
    "handlers/keep.py": (
        "def handler(request):\n"
        "    request.store.set('seen', {'by': request.user.username})\n"
        "    return request.store.get('seen')\n"
    ),
    "jobs/tick.py": (
        "def handler(context):\n"
        "    context.logger.info('tick of run %s', context.run_id)\n"
        "    context.store.set('ticked', context.run_id)\n"
        "    return {'ticked': context.run_id}\n"
    ),
}
ROUTES = [
    {"method": "GET", "path": "/hello", "handler": "handlers/hello.py"},
    {"method": "GET", "path": "/ahello", "handler": "handlers/ahello.py"},
    {"method": "GET", "path": "/boom", "handler": "handlers/boom.py"},
    {"method": "GET", "path": "/keep/:id", "handler": "handlers/keep.py"},
]


class Captured(logging.Handler):
    """Keeps each record formatted as a JSON line, parsed back."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        """Return the lines with these fields."""
        return [line for line in self.lines if all(line.get(k) == v for k, v in fields.items())]


@dataclass
class Platform:
    services: Services
    client: TestClient
    admin: dict[str, str]
    logs: Captured
    spans: InMemorySpanExporter | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_module(root: Path) -> Path:
    return write_module_folder(root, MODULE, ROUTES, HANDLERS)


def platform_of(request: pytest.FixtureRequest, root: Path, *, traced: bool) -> Iterator[Platform]:
    """Yield a platform on the database of `request.param` (sqlite or postgresql)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            credentials, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        if request.param == "sqlite":
            yield from _platform(root, f"sqlite:///{root / 'modhub.db'}", traced)
        else:
            with session_database("modhub_telemetry") as database:
                yield from _platform(root, emptied(database), traced)


def _platform(root: Path, url: str, traced: bool) -> Iterator[Platform]:
    exporter = None
    if traced:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing.enable(provider)
    captured = Captured()
    root_logger, access = logging.getLogger(), logging.getLogger("modhub")
    level = access.level
    root_logger.addHandler(captured)
    access.setLevel(logging.INFO)
    settings = Settings(
        data_dir=root / "data",
        database_url=url,
        secret_key=SECRET,
        admin_password=PASSWORD,
        pip_offline=True,
        operation_wait_seconds=120,
        log_format="json",
    )
    services = Services.start(settings)
    try:
        services.lifecycle.add_bundle(write_module(root / "sources"), actor=ACTOR)
        done, _, _ = services.lifecycle.set_status(MODULE, Status.ENABLED, actor=ACTOR)
        assert done
        services.auth.create_user("admin-user", "admin", PASSWORD)
        with TestClient(create_app(services=services)) as client:
            response = client.post(
                "/api/v1/auth/login", json={"username": "admin-user", "password": PASSWORD}
            )
            admin = bearer(response.json()["accessToken"])
            yield Platform(services, client, admin, captured, exporter)
    finally:
        services.close()
        root_logger.removeHandler(captured)
        access.setLevel(level)
        if traced:
            tracing.disable()
