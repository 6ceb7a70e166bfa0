"""The platform's services, wired once from the settings (used by the API and the CLI)."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from modhub.auth import AuthService
from modhub.auth.roles import seed_roles
from modhub.cluster.clock import FileClock
from modhub.cluster.keycheck import verify_secret_key
from modhub.cluster.logs import LogShipper
from modhub.cluster.materialize import Materializer
from modhub.cluster.nodes import NodeRegistry, NodeReport, on_disk
from modhub.cluster.notify import JOBS_CHANNEL, ChangeListener
from modhub.db import Database
from modhub.db.migrate import is_current, upgrade
from modhub.errors import ConfigurationError
from modhub.events import Dispatcher, DispatchLimits, EventService, EventStore
from modhub.events.platform import PlatformEvents
from modhub.events.publish import CHANNEL as EVENTS_CHANNEL
from modhub.jobs import JobLimits, JobRunner
from modhub.jobs.execution import utc_now
from modhub.keys import SecretBox
from modhub.lifecycle import Lifecycle, Operations, recover
from modhub.lifecycle.operations import OWNER
from modhub.lifecycle.recovery import owner_alive, take_over
from modhub.lifecycle.service import storage_quota_bytes
from modhub.manifest import Manifest
from modhub.registry import Registry
from modhub.routes import ModuleConfigs, RouteTableHolder
from modhub.routes.calls import ModuleCalls
from modhub.routes.sync import RouteSync
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool
from modhub.settings import Settings
from modhub.store import ModuleStore
from modhub.store.channel import StoreService

log = logging.getLogger("modhub.cluster")


@dataclass
class Services:
    """Everything one modhub process runs: database, auth, registry, lifecycle, runtime."""

    settings: Settings
    db: Database
    auth: AuthService
    registry: Registry
    operations: Operations
    lifecycle: Lifecycle
    recovered: list[str]
    routes: RouteTableHolder
    pool: WorkerPool
    module_configs: ModuleConfigs
    sync: RouteSync
    jobs: JobRunner
    store: ModuleStore
    materializer: Materializer
    events: EventService
    dispatcher: Dispatcher
    nodes: NodeRegistry = field(init=False)  # this process in the node list (set by start)
    module_logs: LogShipper = field(init=False)  # its modules' log lines, to the database

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Open the database (migrating the embedded one), recover, and build the services."""
        settings.prepare_data_dir()
        db = Database(settings.db_url)
        if settings.embedded:
            upgrade(db.engine)
        elif not is_current(db.engine):
            db.dispose()
            raise ConfigurationError(
                "the database schema is not up to date: run `modhub db upgrade` first"
            )
        secret = settings.resolved_secret_key()
        try:
            verify_secret_key(db, secret)  # before anything reads a token or a secret
        except ConfigurationError:
            db.dispose()
            raise
        seed_roles(db)  # built-in roles added since the first migration (`metrics`)
        registry = Registry(
            db,
            SecretBox(secret),
            allow_direct_references=settings.pip_allow_direct_references,
        )
        operations = Operations(db, failpoint=settings.failpoint)
        store = ModuleStore(db)
        lifecycle = Lifecycle(registry, operations, settings, store)
        recovered = recover(lifecycle)
        # Versions installed before bundles were stored in the database: stored by the node
        # that has their code; orphans of failed registrations and removals go after a day.
        lifecycle.bundles.backfill(lifecycle.layout.code)
        lifecycle.bundles.delete_unreferenced(older_than=timedelta(days=1))
        pool = WorkerPool(
            settings.data_dir,
            PoolLimits(max_workers=settings.max_workers, idle_seconds=settings.worker_idle_seconds),
        )
        routes = RouteTableHolder()
        configs = ModuleConfigs(registry, cached=True)  # kept fresh by RouteSync below

        def runtime_for(manifest: Manifest, code: Path | None) -> ModuleRuntime | None:
            if code is None:
                return None  # a bare manifest: its routes answer 501
            # This node's own copy (the row's path is the installing node's); absent, it is
            # materialized from the database before a worker starts.
            code = lifecycle.layout.code(manifest.name, manifest.version)
            # Enable and upgrade refuse limits above the operator's ceilings; these caps
            # also hold for a module enabled before a ceiling was lowered.
            limits, default = manifest.runtime, ModuleRuntime
            return ModuleRuntime(
                name=manifest.name,
                version=manifest.version,
                code=code,
                env=lifecycle.layout.env(manifest.name, manifest.version),
                network=limits.network,
                memory_mb=min(limits.memory_mb or default.memory_mb, settings.max_module_memory_mb),
                timeout_ms=min(
                    limits.timeout_ms or default.timeout_ms, settings.max_module_timeout_ms
                ),
                max_concurrency=min(
                    limits.max_concurrency or default.max_concurrency,
                    settings.max_module_concurrency,
                ),
            )

        @functools.lru_cache(maxsize=1024)  # a version's manifest never changes
        def quota(module: str, version: str) -> int:
            return storage_quota_bytes(registry.version_info(module, version)[0], settings)

        pool.services["store"] = StoreService(store, quota).handle
        pool.services["modules"] = ModuleCalls(
            registry, routes, pool, configs, max_body_bytes=settings.max_body_bytes
        ).handle
        events = EventService(registry, EventStore(db, store.writes))  # one writer
        pool.services["events"] = events.handle
        lease = timedelta(seconds=settings.event_lease_seconds)
        dispatcher = Dispatcher(
            registry,
            events.store,
            events.catalogs,
            pool,
            runtime_for,
            DispatchLimits(
                lease=lease,
                heartbeat=lease / 3,
                retention=timedelta(hours=settings.event_retention_hours),
            ),
            configs=configs,  # the routes' cache, kept fresh by the route sync
        )
        events.listeners.append(dispatcher.wake)
        registry.observers.append(PlatformEvents(events))  # modhub/module.* events
        registry.listeners.append(events.catalogs.invalidate)
        materializer = Materializer(
            lifecycle,
            served=lambda: {
                name: served.version
                for name, served in routes.table.items()
                if served.runtime is not None
            },
        )
        pool.prepare = materializer.ensure_runtime

        def on_served(keep: dict[str, str]) -> None:
            pool.retire_soon(keep)
            materializer.wake()  # prefetch (when on) fetches what is served now

        sync = RouteSync(registry, routes, configs, runtime_for, on_served)
        sync.load()
        registry.listeners.append(sync.on_change)
        services = cls(
            settings=settings,
            db=db,
            auth=AuthService(db, settings),
            registry=registry,
            operations=operations,
            lifecycle=lifecycle,
            recovered=recovered,
            routes=routes,
            pool=pool,
            module_configs=configs,
            sync=sync,
            jobs=JobRunner(
                registry,
                pool,
                runtime_for,
                JobLimits(
                    concurrency=settings.job_concurrency,
                    per_module=settings.job_concurrency_per_module,
                    retention=timedelta(days=settings.job_retention_days),
                ),
                # TEST ONLY: a clock the tests move (refused by Settings without testing).
                clock=FileClock(settings.test_clock) if settings.test_clock else utc_now,
            ),
            store=store,
            materializer=materializer,
            events=events,
            dispatcher=dispatcher,
        )

        async def job_failed(failure: dict[str, Any]) -> None:
            await asyncio.to_thread(events.emit_platform, "job.failed", failure)

        services.jobs.failed.append(job_failed)  # modhub/job.failed
        services.nodes = NodeRegistry(
            db,
            heartbeat=timedelta(seconds=settings.node_heartbeat_seconds),
            report=services.node_report,
            release=services.release_gone,
            address=f"http://{settings.host}:{settings.port}",
        )
        services.module_logs = LogShipper(
            db,
            services.nodes.id,
            max_lines=settings.module_log_lines,
            max_bytes=settings.module_log_bytes,
        )
        pool.output.sink = services.module_logs.add
        return services

    def node_report(self) -> NodeReport:
        """Return what this node says of itself on its heartbeat (docs: "Cluster: nodes")."""
        snapshot = self.materializer.snapshot()
        here = set(on_disk(self.lifecycle.layout.modules)) | set(snapshot["materialized"])
        return NodeReport(
            materialized=sorted(here),
            live_workers=len(self.pool.workers),
            runs_in_flight=len(self.jobs.tasks),
            last_error=snapshot["lastError"],
            runner=self.jobs.lease.owner.id,
        )

    def release_gone(self, runner: str) -> None:
        """Release the job lease of a node seen gone, and take over the lifecycle
        operations it left running (docs: "Cluster: running several nodes")."""
        self.jobs.store.release(runner)
        nodes = self.nodes.nodes()
        up = {f"{n.host}:{n.pid}" for n in nodes if n.status == "up"}
        gone = {f"{n.host}:{n.pid}" for n in nodes if n.status != "up"} - up

        def dead(owner: str) -> bool:
            return owner != OWNER and (owner in gone or not owner_alive(owner))

        for line in take_over(self.lifecycle, dead):
            log.warning("took over from a gone node: %s", line)

    def change_listener(self) -> ChangeListener | None:
        """Return a listener that drops the registry's read cache and wakes the route sync
        and the job runner whenever another node changes the registry (PostgreSQL; None on
        SQLite or when turned off)."""
        if self.db.dialect != "postgresql" or not self.settings.listen_changes:
            return None
        return ChangeListener(
            self.db.url,
            [
                self.registry.invalidate,  # first: what the woken read is never a cached answer
                self.sync.wake,
                self.jobs.wake,
                self.events.catalogs.invalidate,
            ],
        )

    def event_listener(self) -> ChangeListener | None:
        """Return a listener that wakes the event dispatcher whenever another node emits
        (PostgreSQL; None on SQLite or when turned off)."""
        if self.db.dialect != "postgresql" or not self.settings.listen_changes:
            return None
        return ChangeListener(self.db.url, [self.dispatcher.wake], channel=EVENTS_CHANNEL)

    def job_listener(self) -> ChangeListener | None:
        """Return a listener that has the job runner claim whenever a node queues runs
        (PostgreSQL; None on SQLite or when turned off)."""
        if self.db.dialect != "postgresql" or not self.settings.listen_changes:
            return None
        return ChangeListener(self.db.url, [self.jobs.claim_soon], channel=JOBS_CHANNEL)

    def close(self) -> None:
        """Stop background operations and release the database connections."""
        self.operations.shutdown()
        self.auth.token_uses.close()  # writes the API token uses it has noted
        self.store.close()  # the store's writer thread and its own connections
        self.events.store.close()  # the emitter's connection (PostgreSQL)
        self.db.dispose()
