"""Tracing is opt-in through the standard variables, and costs nothing when off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from modhub.errors import ConfigurationError
from modhub.telemetry import tracing


@pytest.fixture(autouse=True)
def tracing_off() -> Iterator[None]:
    """Each test starts with tracing off and leaves it so."""
    tracing.disable()
    yield
    tracing.disable()


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "modhub"}, False),  # naming the service is not asking for traces
    ],
)
def test_only_an_endpoint_turns_tracing_on(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_without_an_endpoint_nothing_is_set_up() -> None:
    assert tracing.configure_from_env({}) is False
    assert tracing.tracer() is None
    with tracing.span("anything", module="m") as span:
        assert span is None
    assert tracing.start_handler("m", "route", "h.py") == (None, None)


def test_an_endpoint_sets_up_an_exporter() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # no span is sent
    assert tracing.configure_from_env(environ) is True
    assert tracing.tracer() is not None
    assert tracing.configure_from_env({}) is True  # once a process: on stays on


def test_the_handlers_traceparent_names_its_span() -> None:
    tracing.enable(TracerProvider())
    started, traceparent = tracing.start_handler("m", "route", "h.py")
    assert started is not None
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == started.get_span_context().trace_id
    assert int(span_id, 16) == started.get_span_context().span_id
    tracing.end_handler(started, {"ok": True, "status": 200})


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_is_refused_naming_the_variable(variable: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", variable: "grpc"}
    with pytest.raises(ConfigurationError, match=variable):
        tracing.configure_from_env(environ)
    assert tracing.tracer() is None
