"""`modhub module logs NAME [--limit N]`: the tail the server keeps, N lines of it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modhub.cli import client
from modhub.cli.app import app

runner = CliRunner()


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Answer every API request with three log lines; return what was asked."""
    asked: list[dict[str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        asked.append({"method": method, "url": url, "params": kwargs.get("params")})
        return httpx.Response(200, json={"lines": ["one", "two", "three"]})

    monkeypatch.setattr(client.httpx, "request", request)
    return asked


def test_limit_is_sent_and_the_lines_printed(requests: list[dict[str, Any]]) -> None:
    result = runner.invoke(
        app, ["module", "logs", "hello", "--limit", "3", "--url", "http://h:1", "--token", "t"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == "one\ntwo\nthree\n"
    assert requests == [
        {"method": "GET", "url": "http://h:1/api/v1/modules/hello/logs", "params": {"limit": 3}}
    ]


def test_the_default_limit_is_200(requests: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["module", "logs", "hello", "--token", "t"])
    assert result.exit_code == 0, result.output
    assert requests[0]["params"] == {"limit": 200}


@pytest.mark.parametrize("limit", ["0", "10001", "many"])
def test_a_bad_limit_exits_2_naming_it(requests: list[dict[str, Any]], limit: str) -> None:
    result = runner.invoke(app, ["module", "logs", "hello", "--limit", limit, "--token", "t"])
    assert result.exit_code == 2
    assert "--limit" in result.output
    assert requests == []
