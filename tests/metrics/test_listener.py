"""MODHUB_METRICS_ADDRESS: the metrics without a token on their own address; a bad
address is refused when the settings load, naming the setting. SQLite and PostgreSQL."""

from __future__ import annotations

import socket

import httpx
import pytest
from pydantic import ValidationError

from modhub.errors import ConfigurationError
from modhub.metrics.listener import listen
from modhub.services import Services
from modhub.settings import Settings
from tests.conftest import free_port
from tests.metrics.conftest import parse, value


def test_the_metrics_address_serves_without_a_token(services: Services) -> None:
    port = free_port()
    settings = services.settings.model_copy(update={"metrics_address": f"127.0.0.1:{port}"})
    server = listen(settings, services.db)
    assert server is not None
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert answer.status_code == 200
        samples = parse(answer.text)
        assert value(samples, "modhub_database_up") == 1
        assert "# TYPE modhub_modules gauge" in answer.text  # the database's metrics
        assert "# TYPE modhub_http_requests_total counter" in answer.text  # the process's
    finally:
        server.shutdown()
        server.server_close()


def test_no_listener_unless_set_and_on(services: Services) -> None:
    assert listen(services.settings, services.db) is None
    off = services.settings.model_copy(update={"metrics_address": "127.0.0.1:1", "metrics": False})
    assert listen(off, services.db) is None


def test_an_address_in_use_is_refused_naming_the_setting(services: Services) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = services.settings.model_copy(update={"metrics_address": f"127.0.0.1:{port}"})
        refused = rf"MODHUB_METRICS_ADDRESS 127\.0\.0\.1:{port}: cannot listen"
        with pytest.raises(ConfigurationError, match=refused):
            listen(settings, services.db)


@pytest.mark.parametrize("address", ["9464", "localhost", "host:port", "a b:1", ":9464"])
def test_a_bad_address_is_refused_when_the_settings_load(address: str) -> None:
    with pytest.raises(ValidationError, match="metrics_address"):
        Settings(metrics_address=address)
