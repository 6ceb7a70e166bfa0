"""OpenTelemetry spans, recorded by the SDK's in-memory exporter: an API request, the module
call into the worker with the handler as its child (its traceparent carried in the frame),
the module services it calls and their SQL, and job runs. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.jobs.conftest import wait_for
from tests.telemetry.conftest import MODULE, Platform, platform_of

API = "/api/v1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    yield from platform_of(request, tmp_path_factory.mktemp("traces"), traced=True)


def spans_of(platform: Platform, trace_id: int) -> list[ReadableSpan]:
    assert platform.spans is not None
    return [s for s in platform.spans.get_finished_spans() if s.context.trace_id == trace_id]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    found = [s for s in spans if s.context.span_id == span.parent.span_id]
    assert found, f"{span.name}'s parent was not recorded"
    return found[0]


def ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    names = []
    while (span := parent_of(span, spans)) is not None:  # type: ignore[assignment]
        names.append(span.name)
    return names


def request_trace(platform: Platform, path: str) -> tuple[str, list[ReadableSpan]]:
    """Call a module route; return its request id and the spans of its trace, once the
    server span (the last to end) is recorded."""
    rid = f"traced-{uuid.uuid4().hex}"
    response = platform.client.get(
        f"{API}/m/{MODULE}{path}", headers={**platform.admin, "X-Request-ID": rid}
    )
    assert response.status_code in (200, 500), response.text
    assert platform.spans is not None

    def server() -> ReadableSpan | None:
        found = [
            s
            for s in platform.spans.get_finished_spans()  # type: ignore[union-attr]
            if s.kind == SpanKind.SERVER
            and s.name.startswith("GET /api/v1/m/")
            and s.parent is None
            and (s.attributes or {}).get("http.target", (s.attributes or {}).get("url.path"))
            == f"{API}/m/{MODULE}{path}"
            and any(
                c.name == "modhub.module.call"
                and c.parent
                and c.parent.span_id == s.context.span_id
                for c in platform.spans.get_finished_spans()  # type: ignore[union-attr]
            )
        ]
        return found[-1] if found else None

    root = wait_for(server, what="the request's server span")
    return rid, spans_of(platform, root.context.trace_id)


def test_a_module_request_is_a_tree_down_to_the_store_and_its_sql(platform: Platform) -> None:
    _, spans = request_trace(platform, "/keep/7")
    by_name = {s.name: s for s in spans}
    call = by_name["modhub.module.call"]
    handler = by_name["modhub.module.handler"]
    assert ancestors(handler, spans)[0] == "modhub.module.call"
    assert ancestors(call, spans)[-1].startswith("GET /api/v1/m/")  # the API request's span
    assert handler.kind == SpanKind.SERVER
    assert (handler.attributes or {})["modhub.module"] == MODULE
    assert (handler.attributes or {})["http.response.status_code"] == 200
    stores = [s for s in spans if s.name == "modhub.service.store"]
    assert sorted((s.attributes or {})["modhub.op"] for s in stores) == ["get_entry", "set"]
    for store in stores:
        assert ancestors(store, spans)[:2] == ["modhub.module.handler", "modhub.module.call"]
    sql = [
        s
        for s in spans
        if (s.attributes or {}).get("db.system") or (s.attributes or {}).get("db.system.name")
    ]
    assert sql, [s.name for s in spans]  # the authentication's and the store's statements
    for statement in sql:
        assert ancestors(statement, spans)[-1].startswith("GET /api/v1/m/")


def test_the_traceparent_reaches_the_worker(platform: Platform) -> None:
    rid, spans = request_trace(platform, "/hello")
    handler = next(s for s in spans if s.name == "modhub.module.handler")
    trace_id = f"{handler.context.trace_id:032x}"
    lines = wait_for(
        lambda: [x for x in platform.services.pool.logs[MODULE] if f"[request {rid}" in x],
        what="the handler's log line",
    )
    assert lines == [f"INFO module [request {rid} trace {trace_id}]: hello from the handler"]
    json_lines = platform.logs.find(logger="modhub.access", requestId=rid)
    assert json_lines[0]["traceId"] == trace_id  # the server's own lines name the trace too


def test_a_failing_handler_is_an_error_span(platform: Platform) -> None:
    _, spans = request_trace(platform, "/boom")
    handler = next(s for s in spans if s.name == "modhub.module.handler")
    assert handler.status.status_code == StatusCode.ERROR
    assert handler.status.description == "exception"


def test_a_job_run_is_a_trace_of_its_own(platform: Platform) -> None:
    run = platform.services.jobs.run_now(MODULE, "tick")
    assert platform.spans is not None

    def recorded() -> ReadableSpan | None:
        for s in platform.spans.get_finished_spans():  # type: ignore[union-attr]
            if s.name == "modhub.job.run" and (s.attributes or {}).get("modhub.run") == str(run.id):
                return s
        return None

    job = wait_for(recorded, what="the run's span")
    assert job.parent is None
    assert (job.attributes or {})["modhub.job"] == "tick"
    assert (job.attributes or {})["modhub.attempt"] == 1
    spans = spans_of(platform, job.context.trace_id)
    handler = next(s for s in spans if s.name == "modhub.module.handler")
    assert parent_of(handler, spans) is job
    store = next(s for s in spans if s.name == "modhub.service.store")
    assert ancestors(store, spans) == ["modhub.module.handler", "modhub.job.run"]
