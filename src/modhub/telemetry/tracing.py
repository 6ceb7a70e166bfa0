"""OpenTelemetry traces, opt-in through the standard `OTEL_*` variables.

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
set (and `OTEL_SDK_DISABLED` is not `true`): spans go to that collector over OTLP/HTTP in
batches; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and the exporter's other variables
are read by the SDK itself. Unset, `tracer()` is None and every helper here returns at once:
no span objects, no context changes, nothing added to a worker's frame.

Spans: the API request (FastAPI instrumentation) → `modhub.module.call` (the pool: waiting
for a worker and a slot, sending, waiting for the answer) → `modhub.module.handler` (from
the frame sent to the answer read; its traceparent travels in the frame) → the module
services the handler calls (`modhub.service.store.get`, ...) → their SQL (SQLAlchemy
instrumentation). Job runs are `modhub.job.run` roots with the same children.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.engine import Engine

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SCOPE = "modhub"

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_owned: TracerProvider | None = None  # the provider set up from the environment


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether the environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on with an OTLP/HTTP exporter if the environment asks for it (once a
    process); return whether it is on. A protocol other than http/protobuf is refused."""
    if _tracer is not None:
        return True
    if not wanted(environ):
        return False
    from modhub.errors import ConfigurationError

    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigurationError(
                f"{name}={protocol!r}: modhub exports traces over http/protobuf only"
            )
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "modhub"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    enable(provider)
    global _owned
    _owned = provider
    return True


def enable(provider: TracerProvider) -> None:
    """Record modhub's spans with `provider` (tests pass one with an in-memory exporter)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)


def disable() -> None:
    """Stop recording spans (apps and engines instrumented already keep their hooks); the
    exporter set up from the environment sends what it holds and stops."""
    global _provider, _tracer, _owned
    _provider = _tracer = None
    if _owned is not None:
        _owned.shutdown()
        _owned = None


def tracer() -> Tracer | None:
    """Return modhub's tracer, or None when tracing is off."""
    return _tracer


def instrument_app(app: FastAPI) -> None:
    """Give every API request a server span (FastAPI instrumentation), if tracing is on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Without its per-message "http send"/"http receive" spans: three spans a request
    # where one says what an operator needs, at a third of the cost.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_provider, exclude_spans=["receive", "send"]
    )


def instrument_engine(engine: Engine) -> None:
    """Give every SQL statement of `engine` a span (SQLAlchemy instrumentation), if on.

    The instrumentation's engine tracer is attached to this one engine: its instrumentor
    would also patch `create_engine` for the whole process, once, and refuse a second app.
    """
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    counter = NoOpMeterProvider().get_meter(SCOPE).create_up_down_counter("db.connections")
    sql = _provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    EngineTracer(sql, engine, counter)  # type: ignore[no-untyped-call]


def current_ids() -> dict[str, str]:
    """Return the trace and span ids of the current span (for log lines), if any."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"traceId": f"{context.trace_id:032x}", "spanId": f"{context.span_id:016x}"}


@contextmanager
def span(name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span | None]:
    """Run the block in a span named `name` (a child of `parent`, else of the current span);
    yield None and do nothing when tracing is off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    context = trace.set_span_in_context(parent) if parent is not None else None
    with _tracer.start_as_current_span(name, context=context, attributes=_clean(attributes)) as s:
        yield s


def start_handler(module: str, kind: str, handler: str) -> tuple[Span | None, str | None]:
    """Start the span of a handler's run in its worker (a child of the current span) and
    return it with its W3C traceparent for the frame; (None, None) when tracing is off."""
    if _tracer is None:
        return None, None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    started = _tracer.start_span(
        "modhub.module.handler",
        kind=trace.SpanKind.SERVER,
        attributes={"modhub.module": module, "modhub.kind": kind, "modhub.handler": handler},
    )
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(started))
    return started, carrier.get("traceparent")


def end_handler(
    started: Span | None, answer: Mapping[str, Any] | None, error: str | None = None
) -> None:
    """End a handler's span with the worker's answer (whether it is ok, its status), or
    with the reason no answer came."""
    if started is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if answer is not None:
        if isinstance(answer.get("status"), int):
            started.set_attribute("http.response.status_code", answer["status"])
        if not answer.get("ok"):
            error = str(answer.get("error") or "failed")
    if error is not None:
        started.set_status(Status(StatusCode.ERROR, error))
    started.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"modhub.{k}": v for k, v in attributes.items() if v is not None}
