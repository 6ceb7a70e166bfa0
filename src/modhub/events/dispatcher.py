"""The dispatcher: claims deliveries and runs each subscriber's handler in its own worker.

Driven by `tick(now)` (tests move a fake clock), and `run()` ticks when woken (an emit on
this node, a NOTIFY from another) or every `poll` seconds. A claimed run of one
subscriber's deliveries from one source is delivered in order; a failed attempt is tried
again after a backoff with jitter until the subscription's `retries` are spent, then the
delivery is dead. While it runs deliveries the dispatcher renews their lease; a node that
dies stops renewing, and any other node claims them again once the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modhub import metrics
from modhub.errors import HandlerTimeout, ModhubError, NotFound
from modhub.events.catalog import Catalog, Catalogs
from modhub.events.claim import Claimed
from modhub.events.emitter import running_loop
from modhub.events.store import EventStore
from modhub.jobs.execution import backoff
from modhub.manifest import Manifest
from modhub.registry import Registry, Status
from modhub.routes.dispatch import ModuleConfigs
from modhub.sandbox import ModuleRuntime, WorkerPool
from modhub.sandbox.channel import CallerContext

log = logging.getLogger("modhub.events")
RuntimeFor = Callable[[Manifest, Path | None], ModuleRuntime | None]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class DispatchLimits:
    """How many (subscriber, source) runs deliver at once, how many deliveries one claim
    takes per run, the lease and its heartbeat, the retries' backoff and the retention."""

    concurrency: int = 8
    batch: int = 32
    lease: timedelta = timedelta(seconds=30)
    heartbeat: timedelta = timedelta(seconds=10)
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    retention: timedelta = timedelta(hours=72)
    poll: float = 1.0


class Dispatcher:
    """Delivers pending events to enabled subscribers, on this node."""

    def __init__(
        self,
        registry: Registry,
        store: EventStore,
        catalogs: Catalogs,
        pool: WorkerPool,
        runtime_for: RuntimeFor,
        limits: DispatchLimits | None = None,
        clock: Clock = utc_now,
        configs: ModuleConfigs | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.catalogs = catalogs
        self.pool = pool
        self.runtime_for = runtime_for
        # Asked at each run's start. The services pass the routes' cached configs (kept
        # fresh by the route sync: a change reaches the next run as it reaches the routes);
        # alone, one Core read each time, the secrets decrypted only when they changed.
        self.configs = configs or ModuleConfigs(registry)
        self.limits = limits or DispatchLimits()
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False  # set by `stop`: nothing more is claimed or started
        self.delivered = 0  # deliveries this dispatcher marked delivered
        self._fingerprint: tuple[int, str] | None = None
        self._renewed_at: datetime | None = None
        self._pruned_at: datetime | None = None
        self._runtimes: dict[tuple[str, str], ModuleRuntime | None] = {}
        self._woken: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    # -- the loop --------------------------------------------------------------------------

    async def tick(self, now: datetime) -> None:
        """Do one round: forget removed subscribers' pending deliveries when the registry
        moved, renew the lease when due, prune old events hourly, claim and deliver."""
        catalog = await asyncio.to_thread(self.catalogs.current)
        if catalog.fingerprint != self._fingerprint:
            dropped = await asyncio.to_thread(self.store.drop_pending, set(catalog.emits))
            if dropped:
                log.info("deleted %d pending deliveries of removed modules", dropped)
            self._fingerprint = catalog.fingerprint
        if self.tasks and (
            self._renewed_at is None or now - self._renewed_at >= self.limits.heartbeat
        ):
            await asyncio.to_thread(self.store.renew, self.owner, now, self.limits.lease)
            self._renewed_at = now
        if self._pruned_at is None or now - self._pruned_at > timedelta(hours=1):
            self._pruned_at = now
            pruned = await asyncio.to_thread(self.store.prune, now - self.limits.retention)
            if pruned:
                log.info("deleted %d events older than the retention", pruned)
        await self.dispatch(now, catalog)

    async def dispatch(self, now: datetime, catalog: Catalog | None = None) -> int:
        """Claim what there is room for and start delivering it; return the runs started."""
        if catalog is None:
            catalog = await asyncio.to_thread(self.catalogs.current)
        room = self.limits.concurrency - len(self.tasks)
        runnable = _runnable(catalog)
        if room <= 0 or not runnable or self.stopping:
            return 0
        runs = await asyncio.to_thread(
            self.store.claim,
            self.owner,
            now,
            room,
            runnable,
            self.limits.lease,
            self.limits.batch,
        )
        if runs and self._renewed_at is None:
            self._renewed_at = now
        for run in runs:
            task = asyncio.create_task(self._deliver_run(run, catalog))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(runs)

    def wake(self) -> None:
        """Claim now: an event was emitted (safe from any thread). On the dispatcher's own
        loop (a worker's emit) the event is set at once: `call_soon_threadsafe` would write
        to the loop's wake-up pipe and make it read it back, two system calls an emit."""
        woken = self._woken
        if woken is None:
            return
        loop, event = woken
        if running_loop() is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Tick when woken, or every `poll` seconds, until cancelled."""
        event = asyncio.Event()
        self._woken = (asyncio.get_running_loop(), event)
        try:
            while True:
                event.clear()
                try:
                    await self.tick(self.clock())
                except Exception:
                    log.exception("event dispatch failed")
                with suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.limits.poll)
        finally:
            self._woken = None

    async def drain(self) -> None:
        """Wait for every started run to finish (tests and shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def stop(self, grace: float) -> int:
        """Stop gracefully (SIGTERM): claim nothing more; each run in flight finishes the
        delivery it is in, records it and gives the rest of its claimed deliveries back at
        once, for any node to claim (no lease to wait out). A delivery still going after
        `grace` seconds is interrupted: a failed attempt, retried as its subscription
        allows. Return how many were interrupted."""
        self.stopping = True
        running = [task for task in self.tasks if not task.done()]
        if not running:
            return 0
        log.info("waiting up to %.0f s for %d event delivery run(s)", grace, len(running))
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning(
                "%d event delivery(ies) still going after %.0f s: interrupted, retried by"
                " any node as their subscriptions allow",
                len(late),
                grace,
            )
        return len(late)

    # -- delivering ------------------------------------------------------------------------

    async def _deliver_run(self, run: list[Claimed], catalog: Catalog) -> None:
        """Deliver a claimed run in order; while the dispatcher has room (no other pair can
        be waiting for a slot), record it and claim the pair's next run in one transaction,
        and go on with that one."""
        pair = (run[0].subscriber, run[0].source)
        configs: dict[str, dict[str, Any]] = {}  # read once a run: one subscriber's
        done: list[int] = []
        while run:
            k = 0
            try:
                for k, delivery in enumerate(run):
                    if self.stopping:  # stopping: give back what was not started
                        await self._give_back(done, run[k:])
                        return
                    if not await self._deliver(delivery, catalog, configs):
                        await self._give_back(done, run[k + 1 :])
                        return
                    done.append(delivery.id)
            except asyncio.CancelledError:  # stopped at the deadline, mid-delivery
                await self._interrupted(run[k], catalog)
                await self._give_back(done, run[k + 1 :])
                raise
            fresh = self.catalogs.fresh()
            catalog = fresh if fresh is not None else await asyncio.to_thread(self.catalogs.current)
            if (
                self.stopping
                or len(self.tasks) >= self.limits.concurrency
                or pair[0] not in _runnable(catalog)
            ):
                break
            try:
                run = await asyncio.to_thread(
                    self.store.go_on,
                    done,
                    self.owner,
                    self.clock(),
                    pair,
                    self.limits.lease,
                    self.limits.batch,
                )
            except Exception:  # rolled back: record the run alone; the next tick claims
                log.exception("recording a run and claiming the next of %s failed", pair)
                break
            self.delivered += len(done)
            done, configs = [], {}
        await self._record(done)
        self.wake()  # the pair's next deliveries may be waiting behind this run

    async def _give_back(self, done: list[int], rest: list[Claimed]) -> None:
        """Record the deliveries done, and give back those of the run not attempted."""
        await self._record(done)
        await asyncio.to_thread(self.store.release, [d.id for d in rest], self.owner)

    async def _interrupted(self, delivery: Claimed, catalog: Catalog) -> None:
        """Record an attempt cut short by the server stopping: a failed attempt, retried
        at once by any node while the subscription's retries allow."""
        subscriber = catalog.subscription(delivery.subscriber, f"{delivery.source}/{delivery.name}")
        retries = subscriber.subscription.retries if subscriber is not None else 0
        retry_at = self.clock() if delivery.attempt <= retries else None
        await self._failed(delivery, "interrupted: the server stopped", retry_at)

    async def _record(self, done: list[int]) -> None:
        """Mark deliveries of a run delivered."""
        await asyncio.to_thread(self.store.delivered, done, self.owner, self.clock())
        self.delivered += len(done)

    async def _deliver(
        self, delivery: Claimed, catalog: Catalog, configs: dict[str, dict[str, Any]]
    ) -> bool:
        """Run one attempt; return whether the run may go on (delivered, or dead)."""
        subscriber = catalog.subscription(delivery.subscriber, f"{delivery.source}/{delivery.name}")
        if subscriber is None:
            await self._failed(delivery, "the module no longer subscribes to this event", None)
            return True
        subscription = subscriber.subscription
        try:
            key = (subscriber.module, subscriber.version)
            runtime = self._runtimes.get(key) if key in self._runtimes else None
            if key not in self._runtimes:
                runtime = await asyncio.to_thread(self._runtime, *key)
            if runtime is None:
                raise ModhubError(f"module '{subscriber.module}' has no code to run")
            config = configs.get(subscriber.module)
            if config is None:
                config = await asyncio.to_thread(self.configs.config_for_code, subscriber.module)
                configs[subscriber.module] = config
            timeout_ms = subscription.timeout or runtime.timeout_ms
            context = CallerContext(
                module=runtime.name,
                version=runtime.version,
                user=None,
                job=f"event:{delivery.source}/{delivery.name}",
                deadline=time.monotonic() + timeout_ms / 1000,
                request_id=f"event-{delivery.event_id}",
            )
            await self.pool.call(
                runtime,
                "event",
                subscription.handler,
                {
                    "id": delivery.event_id,
                    "name": delivery.name,
                    "source": delivery.source,
                    "payload": delivery.payload,
                    "emittedAt": delivery.emitted_at.isoformat(),
                    "attempt": delivery.attempt,
                },
                config,
                timeout_ms=timeout_ms,
                context=context,
            )
            metrics.event_delivered(delivery.subscriber, _event(delivery), "delivered")
            return True
        except HandlerTimeout:
            error = f"the handler took longer than {timeout_ms} ms"
        except (ModhubError, NotFound) as exc:
            error = exc.detail
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not stop the dispatcher
            log.exception("delivery %s failed unexpectedly", delivery.id)
            error = f"internal error: {exc}"
        now = self.clock()
        retry_at = (
            now + self._backoff(delivery.attempt)
            if delivery.attempt <= subscription.retries
            else None
        )
        await self._failed(delivery, error, retry_at)
        return retry_at is None  # dead: the next ones go on; retried: they wait behind it

    async def _failed(self, delivery: Claimed, error: str, retry_at: datetime | None) -> None:
        metrics.event_delivered(
            delivery.subscriber, _event(delivery), "retried" if retry_at else "dead"
        )
        if retry_at is None:
            log.warning(
                "event %s to %s is dead after %d attempt(s): %s",
                delivery.event_id,
                delivery.subscriber,
                delivery.attempt,
                error,
            )
        await asyncio.to_thread(
            self.store.failed, delivery.id, self.owner, error, self.clock(), retry_at
        )

    def _runtime(self, module: str, version: str) -> ModuleRuntime | None:
        key = (module, version)
        if key not in self._runtimes:
            manifest, row = self.registry.version_info(module, version)
            self._runtimes[key] = self.runtime_for(manifest, Path(row.path) if row.path else None)
        return self._runtimes[key]

    def _backoff(self, attempt: int) -> timedelta:
        """Return how long a failed attempt waits for the next one (with jitter)."""
        return backoff(attempt, self.limits.backoff_base, self.limits.backoff_max)


def _runnable(catalog: Catalog) -> set[str]:
    """Return the subscribers whose deliveries may be claimed: enabled, with code."""
    return {
        module
        for module, subscriptions in catalog.by_module.items()
        for s in subscriptions.values()
        if s.status == Status.ENABLED and s.has_code
    }


def _event(delivery: Claimed) -> str:
    return f"{delivery.source}/{delivery.name}"
