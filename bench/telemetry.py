"""Measure what the request id middleware, JSON access lines and tracing cost a request.

Run with `.venv/bin/python bench/telemetry.py [--requests N] [--rounds R]`.

In-process, no network: the same minimal FastAPI app (one route answering a small JSON
body, as a module route's answer reaches the client) is called directly through ASGI,
`--requests` times per variant, the variants taking turns in `--rounds` rounds; the figure
is the process CPU time per request (time.process_time), the best round of each variant
and the median of the rounds, so that a busy machine affects every variant alike:

- `bare`: the app alone;
- `request id` (the default, `MODHUB_LOG_FORMAT=text`): `RequestContext` opening the
  request's fields and setting `X-Request-Id`, no log line;
- `json log`: the same with one JSON access line a request, formatted by `JsonFormatter`
  and written to /dev/null (`MODHUB_LOG_FORMAT=json`);
- `traced`: `request id` plus the FastAPI instrumentation and one span of ours, into an SDK
  provider whose batch processor exports to a no-op exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`
  set; the export itself happens off the request path).

The difference to `bare` is the instrumentation's own cost a request; set against a module
route's server CPU a request (about 0.9 ms under load in bench/routes.py), it gives the
share of throughput it costs. Target (issue 16): at most 5 % of module route throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from modhub.telemetry import tracing
from modhub.telemetry.logs import JsonFormatter
from modhub.telemetry.middleware import RequestContext

MODULE_ROUTE_CPU_MS = 0.94  # server CPU a module route request, bench/routes.py under load


class Dropped(SpanExporter):
    """Takes spans and does nothing with them."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def app(*, context: bool, access_log: bool = False, traced: bool = False) -> FastAPI:
    built = FastAPI()

    @built.get("/api/v1/m/bench/ping")
    async def ping() -> dict[str, Any]:
        with tracing.span("modhub.module.call", module="bench"):
            return {"ok": True}

    if context:
        built.add_middleware(RequestContext, access_log=access_log)
    if traced:
        tracing.instrument_app(built)
    return built


async def call(asgi: Any, count: int) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/m/bench/ping",
        "raw_path": b"/api/v1/m/bench/ping",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"x-request-id", b"bench-1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(count):
        await asgi(dict(scope), receive, send)


def measure(make: Callable[[], Any], count: int, setup: Callable[[], None]) -> float:
    """Return the CPU µs a request of `count` requests through a fresh app."""
    setup()
    asgi = make()
    asyncio.run(call(asgi, 200))  # warm: the middleware stack is built on the first call
    started = time.process_time()
    asyncio.run(call(asgi, count))
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    access = logging.getLogger("modhub.access")
    access.propagate = False
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    sink.setFormatter(JsonFormatter())
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))

    def plain() -> None:
        tracing.disable()
        access.handlers.clear()
        access.setLevel(logging.WARNING)

    def json_log() -> None:
        plain()
        access.addHandler(sink)
        access.setLevel(logging.INFO)

    def traced() -> None:
        plain()
        tracing.enable(provider)

    variants: dict[str, tuple[Callable[[], Any], Callable[[], None]]] = {
        "bare": (lambda: app(context=False), plain),
        "request id (text logs)": (lambda: app(context=True), plain),
        "json log": (lambda: app(context=True, access_log=True), json_log),
        "traced": (lambda: app(context=True, traced=True), traced),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (make, setup) in variants.items():
            results[name].append(measure(make, args.requests, setup))
    plain()
    provider.shutdown()
    print(f"load average: {os.getloadavg()[0]:.1f} (2 vCPUs)")
    heads = f"{'best µs':>10}{'median µs':>11}{'added µs':>10}{'of a module route':>19}"
    print(f"{'variant':<26}{heads}")
    bare = min(results["bare"])
    for name, values in results.items():
        added = min(values) - bare
        share = added / (MODULE_ROUTE_CPU_MS * 1000) * 100
        print(
            f"{name:<26}{min(values):>10.1f}{statistics.median(values):>11.1f}"
            f"{added:>10.1f}{share:>18.1f}%"
        )
    for name in ("request id (text logs)", "json log"):
        share = (min(results[name]) - bare) / (MODULE_ROUTE_CPU_MS * 1000) * 100
        print(f"{'PASS' if share <= 5 else 'MISS'}  {name}: {share:.1f} % (target <= 5 %)")


if __name__ == "__main__":
    main()
