"""The FastAPI application: routers under /api/v1, problem errors, body limit."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modhub import __version__
from modhub.api import observability, problems
from modhub.api.limits import BodyLimit
from modhub.api.redirects import RelativeRedirects
from modhub.api.routers import (
    auth,
    cluster,
    events,
    jobs,
    lifecycle,
    modules,
    store,
    system,
    tokens,
)
from modhub.api.shutdown import ShutdownWatch
from modhub.routes import install_openapi, module_router
from modhub.services import Services
from modhub.settings import Settings
from modhub.telemetry import middleware as request_context
from modhub.telemetry import tracing
from modhub.web import console_router, ui_api_router

API_PREFIX = "/api/v1"


def served_app() -> FastAPI:
    """The app each process of `modhub serve --workers N` builds (a uvicorn factory)."""
    return create_app(freeze_startup=True)


async def _purge(svc: Services, interval: float = 60.0) -> None:
    """Delete expired store keys now and then (readers never see them meanwhile)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(svc.store.purge_expired)
        except Exception:  # a database hiccup: try again at the next interval
            logging.getLogger("modhub.store").exception("purging expired keys failed")


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    *,
    freeze_startup: bool = False,
) -> FastAPI:
    """Return the modhub ASGI app; its services start with it unless given.

    `freeze_startup` (what `modhub serve` runs): once started, the objects built so far
    leave the garbage collector's full collections (`gc.freeze`). They live as long as the
    process, and a full collection walking them all (~150,000: FastAPI's routes and
    models, SQLAlchemy's tables, the services) stopped every request for ~80 ms, now and
    then: the tail of the request latency. Tests building many apps leave it off.
    """
    settings = services.settings if services else (settings or Settings())
    tracing.configure_from_env()  # OTEL_EXPORTER_OTLP_ENDPOINT: traces on, else nothing

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        svc: Services = services or Services.start(settings)
        app.state.services = svc
        tracing.instrument_engine(svc.db.engine)
        await asyncio.to_thread(svc.nodes.register)  # in the node list from now on
        background = [
            asyncio.create_task(svc.sync.poll(svc.settings.sync_poll_seconds)),
            asyncio.create_task(_purge(svc)),
        ]
        listener = svc.change_listener()  # other nodes' changes at once (PostgreSQL)
        if listener is not None:
            background.append(asyncio.create_task(listener.run()))
        background.append(asyncio.create_task(svc.nodes.run()))
        background.append(asyncio.create_task(svc.module_logs.run()))
        if svc.settings.metrics:  # each process's live workers and their memory
            background.append(asyncio.create_task(observability.sampler(app).run()))
        if svc.settings.scheduler:
            background.append(asyncio.create_task(svc.jobs.run()))
            queued = svc.job_listener()  # runs other nodes queue, claimed at once (PostgreSQL)
            if queued is not None:
                background.append(asyncio.create_task(queued.run()))
        if svc.settings.event_dispatch:
            background.append(asyncio.create_task(svc.dispatcher.run()))
            heard = svc.event_listener()  # other nodes' emits at once (PostgreSQL)
            if heard is not None:
                background.append(asyncio.create_task(heard.run()))
        if svc.settings.prefetch:
            background.append(asyncio.create_task(svc.materializer.prefetch()))
        watch = ShutdownWatch(svc.settings.shutdown_grace_seconds)
        watch.install()  # SIGTERM: job runs and events drain while uvicorn drains requests
        dispatching = svc.dispatcher if svc.settings.event_dispatch else None
        drain = asyncio.create_task(watch.drain(svc.jobs, dispatching))
        if freeze_startup:
            gc.collect()  # the start-up's own garbage first
            gc.freeze()
        try:
            yield
        finally:
            await watch.finish(drain)
            for task in background:
                task.cancel()
            await svc.pool.close()
            try:  # the last lines of its modules' logs, "worker stopped" included
                await asyncio.to_thread(svc.module_logs.flush)
            except Exception:
                logging.getLogger("modhub.cluster").exception("could not write module logs")
            try:
                await asyncio.to_thread(svc.nodes.stop)
            except Exception:  # the list shows it gone instead of stopped
                logging.getLogger("modhub.cluster").exception("could not mark the node stopped")
            if owned:
                svc.close()

    app = FastAPI(
        title="modhub",
        version=__version__,
        lifespan=lifespan,
        description="The module registry and runtime of the automation platform.",
    )
    if services is not None:
        app.state.services = services
    problems.install(app)
    for router in (
        auth.router,
        cluster.router,
        events.router,
        jobs.router,
        lifecycle.router,
        modules.router,
        store.router,
        system.router,
        tokens.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(module_router(inline_lookups=settings.embedded), prefix=API_PREFIX)
    install_openapi(app, lambda: app.state.services.routes.table)
    app.include_router(system.health_router)
    observability.install(app, settings)  # /metrics, /readyz, the API request metrics
    app.include_router(ui_api_router, prefix=API_PREFIX)
    app.include_router(console_router)  # last: its catch-all serves the console
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RelativeRedirects)  # never a redirect to the Host header's name
    tracing.instrument_app(app)  # its span inside the request's context: the next line
    # Outermost: every answer, a 413 of the body limit and a 500 too, carries the request's id.
    request_context.install(app, access_log=settings.log_format == "json")
    return app
