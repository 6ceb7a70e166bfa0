"""`GET /metrics` (Prometheus, with `metrics:read`), `GET /readyz`, and the API request
metrics: a pure ASGI middleware timing every request by its route template."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modhub import metrics
from modhub.api import readiness
from modhub.api.deps import ServicesDep, lookup, require
from modhub.api.problems import problem, responses
from modhub.auth import Permission, Principal
from modhub.cluster.keycheck import check_value
from modhub.errors import NotFound
from modhub.metrics.collector import DatabaseCollector
from modhub.metrics.exposition import render
from modhub.metrics.memory import WorkerSampler
from modhub.services import Services
from modhub.settings import Settings
from modhub.telemetry.templates import RouteTemplates

router = APIRouter(tags=["system"])
MetricsReader = Annotated[Principal, Depends(require(Permission.METRICS_READ))]


class RequestMetrics:
    """Counts and times each HTTP request by route template (`unmatched` when no route
    matched: a raw path is never a label), method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.template = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            metrics.observe_request(self.template(scope), scope["method"], status, started)


def sampler(app: FastAPI) -> WorkerSampler:
    """Return the app's sampler of live workers and their memory."""
    found: WorkerSampler = app.state.worker_sampler
    return found


def collectors(svc: Services) -> list[Collector]:
    """Return the collectors a scrape adds to the processes' own metrics."""
    return [DatabaseCollector(svc.db)]


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **responses(401, 403, 404),
    },
)
async def get_metrics(request: Request, svc: ServicesDep, _reader: MetricsReader) -> Response:
    """Return the metrics in the Prometheus text format (docs/metrics.md lists them)."""
    if not svc.settings.metrics:
        raise NotFound("metrics are turned off on this server (MODHUB_METRICS=off)")
    live = sampler(request.app)
    workers = list(live.live())  # on the loop, which changes the pool

    def scrape() -> bytes:
        live.sample(workers)
        return render(collectors(svc))

    return Response(await lookup(svc, scrape), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", responses=responses(503))
async def readyz(request: Request, svc: ServicesDep) -> JSONResponse:
    """Answer 200 when this node can serve: its database answers, the schema is current,
    and the secret key is the cluster's; 503 naming the failing check otherwise."""
    key = getattr(request.app.state, "key_check", None)
    if key is None:
        key = request.app.state.key_check = check_value(svc.settings.resolved_secret_key())
    found = await run_in_threadpool(readiness.check, svc.db, key)
    if found.ready:
        return JSONResponse({"status": "ready", "checks": found.checks()})
    name, reason = next(iter(found.failures.items()))
    return problem(
        503,
        "Not ready",
        f"{name}: {reason}",
        "not-ready",
        failing=name,
        checks=found.checks(),
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Serve /metrics and /readyz on `app`, and time its requests unless metrics are off."""
    metrics.configure(enabled=settings.metrics)

    def live() -> list[tuple[str, int]]:
        workers = getattr(app.state.services.pool, "workers", {})  # a test's fake pool: none
        return [(w.runtime.name, w.process.pid) for w in workers.values()]

    app.state.worker_sampler = WorkerSampler(live)
    app.include_router(router)
    if settings.metrics:
        app.add_middleware(RequestMetrics)
