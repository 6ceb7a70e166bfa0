"""`MODHUB_LOG_FORMAT=json` and the request id: one JSON object a line with the request's
fields; the id honoured from X-Request-ID when safe, sent back, in problem+json answers, and
carried into the module's worker and its log lines. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modhub import telemetry
from modhub.telemetry.logs import JsonFormatter
from tests.jobs.conftest import wait_for
from tests.telemetry.conftest import MODULE, Platform, platform_of

API = "/api/v1"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    yield from platform_of(request, tmp_path_factory.mktemp("logs"), traced=False)


def record(message: str, level: int = logging.INFO, exc_info: object = None) -> logging.LogRecord:
    return logging.getLogger("modhub.test").makeRecord(
        "modhub.test",
        level,
        __file__,
        1,
        message,
        (),
        exc_info,  # type: ignore[arg-type]
    )


def test_a_line_outside_a_request_has_only_its_own_fields() -> None:
    line = json.loads(JsonFormatter().format(record("plain \x1b[31m text\nsecond line")))
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"]) == ("INFO", "modhub.test")
    assert line["message"] == "plain \x1b[31m text\nsecond line"  # escaped: still one line
    assert line["time"].endswith("+00:00")


@pytest.mark.parametrize("created", [1764970005.0, 1764970005.999, 1764970006.0004, 86400.5])
def test_the_time_is_utc_to_the_millisecond(created: float) -> None:
    formatter = JsonFormatter()
    for moment in (created - 1, created):  # the second's text is kept between lines
        line = record("x")
        line.created = moment
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(line))["time"] == expected


def test_a_line_inside_a_request_carries_its_fields_and_a_traceback() -> None:
    try:
        raise ValueError("the reason")
    except ValueError:
        exc = sys.exc_info()
    with telemetry.bind(requestId="r-1", user="ann"):
        telemetry.note(module="vms", route="/vms/:id", status=503)
        text = JsonFormatter().format(record("failed", logging.ERROR, exc_info=exc))
    assert "\n" not in text
    line = json.loads(text)
    assert {k: line[k] for k in ("requestId", "user", "module", "route", "status")} == {
        "requestId": "r-1",
        "user": "ann",
        "module": "vms",
        "route": "/vms/:id",
        "status": 503,
    }
    assert "ValueError: the reason" in line["exception"]
    assert telemetry.current() == {}  # the request's fields end with it


def test_a_platform_request_logs_one_access_line_with_its_fields(platform: Platform) -> None:
    response = platform.client.get(f"{API}/modules", headers=platform.admin)
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    assert UUID.fullmatch(rid)
    (line,) = platform.logs.find(logger="modhub.access", requestId=rid)
    assert line["user"] == "admin-user"
    assert (line["route"], line["status"], line["level"]) == ("/api/v1/modules", 200, "INFO")
    assert line["message"] == "GET /api/v1/modules 200"
    assert isinstance(line["durationMs"], float)
    assert line["durationMs"] >= 0


def test_a_safe_incoming_request_id_is_kept_everywhere(platform: Platform) -> None:
    rid = f"edge-{uuid.uuid4().hex[:12]}:7.1_x"
    response = platform.client.get(
        f"{API}/modules/not-there", headers={**platform.admin, "X-Request-ID": rid}
    )
    assert response.status_code == 404
    assert response.headers["x-request-id"] == rid
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["requestId"] == rid
    (line,) = platform.logs.find(logger="modhub.access", requestId=rid)
    assert (line["status"], line["route"]) == (404, "/api/v1/modules/{name}")


@pytest.mark.parametrize(
    "sent",
    ["has space", "x" * 129, 'quote"d', "semi;colon", "ünïcode", "", "a/b", "{json}"],
)
def test_an_unsafe_incoming_request_id_is_replaced(platform: Platform, sent: str) -> None:
    response = platform.client.get(
        f"{API}/modules/not-there",
        headers={**platform.admin, "X-Request-ID": sent.encode()},
    )
    rid = response.headers["x-request-id"]
    assert rid != sent
    assert UUID.fullmatch(rid)
    assert response.json()["requestId"] == rid


def test_a_problem_without_authentication_carries_the_request_id(platform: Platform) -> None:
    response = platform.client.get(f"{API}/modules", headers={"X-Request-ID": "no-token-1"})
    assert response.status_code == 401
    assert response.json()["requestId"] == "no-token-1"
    (line,) = platform.logs.find(logger="modhub.access", requestId="no-token-1")
    assert "user" not in line
    assert line["status"] == 401


def test_an_unexpected_error_is_a_500_with_the_request_id(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug of ours")

    registry = platform.services.registry
    monkeypatch.setattr(registry, "list_json", broken)
    registry.reads.invalidate()  # no cached page: the list is read, and fails
    client = TestClient(platform.client.app, raise_server_exceptions=False)  # as uvicorn does
    response = client.get(f"{API}/modules", headers={**platform.admin, "X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-1"
    assert response.json()["requestId"] == "bug-1"
    (logged,) = platform.logs.find(logger="modhub.api", requestId="bug-1")
    assert logged["level"] == "ERROR"
    assert "RuntimeError: a bug of ours" in logged["exception"]
    (access,) = platform.logs.find(logger="modhub.access", requestId="bug-1")
    assert access["status"] == 500


@pytest.mark.parametrize("path", ["/hello", "/ahello"])
def test_the_request_id_travels_into_the_worker_and_its_log_lines(
    platform: Platform, path: str
) -> None:
    rid = f"trail-{uuid.uuid4().hex}"
    response = platform.client.get(
        f"{API}/m/{MODULE}{path}", headers={**platform.admin, "X-Request-ID": rid}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == rid
    assert response.json() == {"requestId": rid}  # the handler's own `request.request_id`
    kept = platform.services.pool.logs[MODULE]
    mine = wait_for(
        lambda: [line for line in kept if f"[request {rid}]" in line], what="the log line"
    )
    assert mine == [
        f"INFO module [request {rid}]: hello from the {'async ' if 'a' in path[1] else ''}handler"
    ]
    (access,) = platform.logs.find(logger="modhub.access", requestId=rid)
    assert (access["module"], access["route"], access["user"]) == (MODULE, path, "admin-user")
    assert access["status"] == 200


def test_a_module_routes_problem_carries_the_incoming_id(platform: Platform) -> None:
    response = platform.client.get(
        f"{API}/m/{MODULE}/boom", headers={**platform.admin, "X-Request-ID": "boom-7"}
    )
    assert response.status_code == 500, response.text
    assert response.json()["requestId"] == "boom-7"
    assert response.headers["x-request-id"] == "boom-7"
    traceback = wait_for(
        lambda: [
            line for line in platform.services.pool.logs[MODULE] if "[request boom-7]" in line
        ],
        what="the handler's failure in its log",
    )
    assert "handler handlers/boom.py failed" in traceback[0]
    (access,) = platform.logs.find(logger="modhub.access", requestId="boom-7")
    assert access["status"] == 500


def test_a_job_runs_log_lines_name_the_run(platform: Platform) -> None:
    run = platform.services.jobs.run_now(MODULE, "tick")
    kept = platform.services.pool.logs[MODULE]
    mine = wait_for(
        lambda: [line for line in kept if f"[run {run.id}]" in line], what="the run's log line"
    )
    assert mine == [f"INFO module [run {run.id}]: tick of run {run.id}"]


def test_text_stays_the_default(tmp_path: Path) -> None:
    from modhub.settings import Settings

    assert Settings(data_dir=tmp_path).log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        Settings(data_dir=tmp_path, log_format="xml")
