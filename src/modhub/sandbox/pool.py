"""The worker pool: one process per module version, started on demand, stopped when idle.

A worker that crashes, answers garbage or hangs past its timeout is killed; its module's
requests answer 503 while it restarts with exponential backoff, and no other module
notices. A bound on live workers lets many enabled modules share one machine: when it
is reached, the least recently used idle worker is stopped.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import contextvars
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modhub import metrics
from modhub.errors import (
    BadWorkerResponse,
    HandlerFailed,
    HandlerMissing,
    HandlerTimeout,
    WorkerUnavailable,
)
from modhub.sandbox.cgroups import Cgroups, Group
from modhub.sandbox.channel import CallerContext, ServiceHandler, serve
from modhub.sandbox.launch import (
    MAX_TASKS,
    WORKER_SCRIPT,
    ModuleRuntime,
    command,
    descendants,
    prepare_runtime,
)
from modhub.sandbox.output import Logs, ModuleOutput
from modhub.sandbox.worker import HEADER
from modhub.telemetry import bind, tracing

log = logging.getLogger("modhub.sandbox")
# The span of a call into a worker, by kind: a job's run is the root of its own trace.
_SPANS = {"job": "modhub.job.run", "event": "modhub.event.delivery", "route": "modhub.module.call"}
MAX_SERVICE_CALLS = 8  # module-service calls in flight per worker; past them its channel waits


@dataclass(frozen=True)
class PoolLimits:
    """Bounds on the pool as a whole."""

    max_workers: int = 64
    idle_seconds: float = 300.0
    max_response_bytes: int = 16 * 1024 * 1024
    backoff_base: float = 0.5
    backoff_max: float = 30.0


@dataclass
class Worker:
    """One running worker process and its in-flight requests."""

    runtime: ModuleRuntime
    process: asyncio.subprocess.Process
    slots: asyncio.Semaphore
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    waiting: int = 0  # requests that chose this worker and wait for one of its slots
    contexts: dict[int, CallerContext] = field(default_factory=dict)  # by request id
    service_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_SERVICE_CALLS)
    )
    last_used: float = field(default_factory=time.monotonic)
    retiring: bool = False
    failed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    group: Group | None = None  # its control group, where the machine gives modhub some
    last_request: str | None = None  # the id of its last call answered alone

    @property
    def busy(self) -> bool:
        """Return whether a request is in flight or waiting for a slot."""
        return bool(self.pending) or self.waiting > 0

    def request_id(self) -> str | None:
        """Return the call its output belongs to now: the one in flight, else the last one
        answered; None while several are in flight (they write one stream)."""
        if len(self.contexts) > 1:
            return None
        if self.contexts:
            return next(iter(self.contexts.values())).request_id or None
        return self.last_request


@dataclass
class Health:
    """Crash history of one module version, for backoff."""

    failures: int = 0
    down_until: float = 0.0
    last_error: str = ""


class WorkerPool:
    """Starts, calls, restarts and stops module workers."""

    def __init__(self, root: Path, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self.root = root
        self.runtime_dir = prepare_runtime(root / "runtime")
        self.cgroups = Cgroups.detect()
        self.workers: dict[str, Worker] = {}
        self.health: dict[str, Health] = collections.defaultdict(Health)
        self.output = ModuleOutput()
        self.services: dict[str, ServiceHandler] = {}  # "store", "modules": set by Services
        self._handler_spans: dict[int, Any] = {}  # by request id, while tracing is on
        # Awaited before a worker starts: brings the version's code and environment to this
        # node when they are missing (set by Services: the cluster's materializer).
        self.prepare: Callable[[ModuleRuntime], Awaitable[None]] | None = None
        self._next_id = 0
        self._starting: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._reaper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def logs(self) -> Logs:
        """Return each module's kept output (bounded lines, a bounded ring per module)."""
        return self.output.logs

    # -- calling ---------------------------------------------------------------------------

    async def call(
        self,
        runtime: ModuleRuntime,
        kind: str,
        handler: str,
        payload: dict[str, Any],
        config: dict[str, Any],
        timeout_ms: int | None = None,
        context: CallerContext | None = None,
    ) -> dict[str, Any]:
        """Run a handler in the module's worker and return its answer (see `_call`), in a
        span when tracing is on: a job run's, an event delivery's, or a module call's."""
        args = (runtime, kind, handler, payload, config, timeout_ms, context)
        if tracing.tracer() is None:
            return await self._call(*args)
        with tracing.span(
            _SPANS.get(kind, "modhub.module.call"),
            module=runtime.name,
            version=runtime.version,
            handler=handler,
            job=payload.get("job") if kind == "job" else None,
            run=payload.get("runId") if kind == "job" else None,
            attempt=payload.get("attempt") if kind == "job" else None,
        ):
            return await self._call(*args)

    async def _call(
        self,
        runtime: ModuleRuntime,
        kind: str,
        handler: str,
        payload: dict[str, Any],
        config: dict[str, Any],
        timeout_ms: int | None = None,
        context: CallerContext | None = None,
    ) -> dict[str, Any]:
        """Run a handler in the module's worker and return its answer. `context` is whom
        the module services it calls meanwhile act for (default: this request or job)."""
        self._loop = asyncio.get_running_loop()
        runtime = runtime.for_handler(handler)  # .ts/.js handlers: the module's Node worker
        limit = timeout_ms or runtime.timeout_ms
        if context is None:
            context = CallerContext(
                module=runtime.name,
                version=runtime.version,
                user=payload.get("user") if kind == "route" else None,
                job=payload.get("job") if kind == "job" else None,
                deadline=time.monotonic() + limit / 1000,
                request_id=str(payload.get("requestId") or payload.get("runId") or ""),
            )
        worker = await self._worker(runtime)
        worker.waiting += 1  # a retiring worker is kept until this request is answered
        try:
            await worker.slots.acquire()
        finally:
            worker.waiting -= 1
        try:
            self._next_id += 1
            request_id = self._next_id
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            worker.pending[request_id] = future
            worker.contexts[request_id] = context
            worker.last_used = time.monotonic()
            try:
                self._send(
                    worker,
                    {
                        "id": request_id,
                        "kind": kind,
                        "handler": handler,
                        "payload": payload,
                        "config": config,
                        **self._trace(future, request_id, context, runtime.name, kind, handler),
                    },
                )
                answer = await asyncio.wait_for(future, limit / 1000)
            except TimeoutError:
                await self._fail(
                    worker,
                    f"handler {handler} did not answer in {limit} ms; worker restarted",
                    cause="timeout",
                )
                raise HandlerTimeout(
                    f"module '{runtime.name}' did not answer in {limit} ms",
                    module=runtime.name,
                ) from None
            finally:
                worker.pending.pop(request_id, None)
                worker.contexts.pop(request_id, None)
                worker.last_used = time.monotonic()
                if not worker.contexts:  # its late output is still this call's
                    worker.last_request = context.request_id or None
        finally:
            worker.slots.release()
        return _decode(runtime, handler, answer)

    def _trace(
        self,
        answered: asyncio.Future[dict[str, Any]],
        request_id: int,
        context: CallerContext,
        module: str,
        kind: str,
        handler: str,
    ) -> dict[str, Any]:
        """Return the frame's request id and, when tracing, the traceparent of the handler's
        span: started now, ended when `answered` is (by the answer, a failure or a timeout)."""
        fields: dict[str, Any] = {"requestId": context.request_id}
        started, traceparent = tracing.start_handler(module, kind, handler)
        if started is None:
            return fields
        self._handler_spans[request_id] = started

        def end(future: asyncio.Future[dict[str, Any]]) -> None:
            self._handler_spans.pop(request_id, None)
            if future.cancelled():
                tracing.end_handler(started, None, "no answer in time")
            elif future.exception() is not None:
                tracing.end_handler(started, None, str(future.exception()))
            else:
                tracing.end_handler(started, future.result())

        answered.add_done_callback(end)
        fields["traceparent"] = traceparent
        return fields

    def _send(self, worker: Worker, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), default=str).encode()
        stdin = worker.process.stdin
        if stdin is None or stdin.is_closing():
            raise WorkerUnavailable(f"module '{worker.runtime.name}' worker is not running")
        stdin.write(HEADER.pack(len(data)) + data)

    # -- workers ---------------------------------------------------------------------------

    async def _worker(self, runtime: ModuleRuntime) -> Worker:
        worker = self.workers.get(runtime.key)
        if worker is not None and worker.process.returncode is None and not worker.retiring:
            return worker
        async with self._starting[runtime.key]:
            worker = self.workers.get(runtime.key)
            if worker is not None and worker.process.returncode is None and not worker.retiring:
                return worker
            health = self.health[runtime.key]
            wait = health.down_until - time.monotonic()
            if wait > 0:
                raise WorkerUnavailable(
                    f"module '{runtime.name}' is restarting after a failure ({health.last_error});"
                    f" retry in {wait:.1f} s",
                    module=runtime.name,
                    retryAfter=round(wait, 1),
                )
            if self.prepare is not None:
                await self.prepare(runtime)
            if not (self.runtime_dir / WORKER_SCRIPT).is_file():  # the data dir was deleted
                await asyncio.to_thread(prepare_runtime, self.runtime_dir)
            await self._make_room()
            return await self._start(runtime)

    async def _start(self, runtime: ModuleRuntime) -> Worker:
        argv, env = command(runtime, self.runtime_dir, self.root / "tmp" / runtime.name)
        group = None
        if self.cgroups is not None:
            try:
                group = self.cgroups.create(runtime.key, runtime.memory_mb, MAX_TASKS)
            except OSError as exc:  # the machine gave modhub groups: never start without one
                self._record_failure(runtime, f"cannot make its control group: {exc}")
                raise WorkerUnavailable(
                    f"module '{runtime.name}' worker cannot start: no control group ({exc})"
                ) from None
            argv = group.joined(argv)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(runtime.code),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=self.limits.max_response_bytes + HEADER.size,
                start_new_session=True,
            )
        except OSError as exc:
            if group is not None:
                group.remove()
            self._record_failure(runtime, f"cannot start worker: {exc}")
            raise WorkerUnavailable(f"module '{runtime.name}' worker cannot start: {exc}") from None
        worker = Worker(runtime, process, asyncio.Semaphore(runtime.max_concurrency), group=group)
        worker.tasks = [  # in a context of their own: not the request's that started it
            asyncio.create_task(self._read_answers(worker), context=contextvars.Context()),
            asyncio.create_task(self._read_log(worker), context=contextvars.Context()),
        ]
        self.workers[runtime.key] = worker
        metrics.worker_started(runtime.name, restart=self.health[runtime.key].failures > 0)
        log.info("started worker %s (pid %s)", runtime.key, process.pid)
        self._ensure_reaper()
        return worker

    async def _read_answers(self, worker: Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        reason, cause = "the worker exited", "exited"
        try:
            while True:
                header = await stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(header)
                if size > self.limits.max_response_bytes:
                    limit = self.limits.max_response_bytes
                    reason = f"the worker sent {size} bytes, over the {limit} limit"
                    cause = "oversize"
                    break
                message = json.loads(await stdout.readexactly(size))
                if "call" in message:
                    # At most MAX_SERVICE_CALLS in flight a worker: past them this worker's
                    # channel is not read, so a flood holds back only its own module.
                    await worker.service_slots.acquire()
                    task = asyncio.create_task(self._serve_call(worker, message))
                    worker.tasks.append(task)
                    task.add_done_callback(_forget(worker.tasks))
                    continue
                self.health[worker.runtime.key].failures = 0  # it answers: forget old crashes
                future = worker.pending.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (ValueError, json.JSONDecodeError):
            reason, cause = "the worker sent a malformed answer", "protocol"
        await self._fail(worker, reason, cause=cause)

    async def _serve_call(self, worker: Worker, message: dict[str, Any]) -> None:
        """Answer one module-service call of a worker's handler."""
        rid = message.get("rid")
        caller = worker.contexts.get(rid) if isinstance(rid, int) else None
        try:
            with (
                bind(requestId=caller.request_id if caller else None, module=worker.runtime.name),
                tracing.span(
                    "modhub.service." + _known(message.get("service"), self.services),
                    parent=self._handler_spans.get(rid) if isinstance(rid, int) else None,
                    op=str(message.get("op"))[:64],
                ),
            ):
                reply = await serve(self.services, worker.contexts, message, worker.runtime.key)
        finally:
            worker.service_slots.release()
        reply["reply"] = message.get("call")
        with contextlib.suppress(WorkerUnavailable):
            self._send(worker, reply)

    async def _read_log(self, worker: Worker) -> None:
        stderr = worker.process.stderr
        assert stderr is not None
        with contextlib.suppress(ConnectionError):
            await self.output.read(
                stderr, worker.runtime.name, worker.runtime.key, worker.request_id
            )

    async def _fail(self, worker: Worker, reason: str, *, cause: str = "exited") -> None:
        """Kill a worker that misbehaved, fail its requests, and back off its restarts."""
        if worker.failed:
            return  # one failure, seen twice: by a timed-out call, then by its reader at EOF
        worker.failed = True
        if self.workers.get(worker.runtime.key) is worker:
            del self.workers[worker.runtime.key]
        crashed = worker.process.returncode not in (None, 0) or not worker.retiring
        await _kill(worker)
        code = worker.process.returncode
        if crashed and not worker.retiring:
            detail = f"{reason} (exit code {code})" if code not in (None, 0) else reason
            self._record_failure(worker.runtime, detail)
            metrics.worker_ended(worker.runtime.name, cause)
            self.logs[worker.runtime.name].append(f"modhub: worker stopped: {detail}")
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(
                    WorkerUnavailable(
                        f"module '{worker.runtime.name}' worker stopped: {reason}",
                        module=worker.runtime.name,
                    )
                )

    def _record_failure(self, runtime: ModuleRuntime, reason: str) -> None:
        health = self.health[runtime.key]
        health.failures += 1
        health.last_error = reason
        delay = min(self.limits.backoff_max, self.limits.backoff_base * 2 ** (health.failures - 1))
        health.down_until = time.monotonic() + delay
        log.warning("worker %s failed (%s); restart allowed in %.1f s", runtime.key, reason, delay)

    async def _make_room(self) -> None:
        while len(self.workers) >= self.limits.max_workers:
            idle = [w for w in self.workers.values() if not w.busy]
            if not idle:
                raise WorkerUnavailable("every worker slot is busy; try again shortly")
            await self.stop_worker(min(idle, key=lambda w: w.last_used), cause="evicted")

    # -- stopping --------------------------------------------------------------------------

    async def stop_worker(self, worker: Worker, *, cause: str = "retired") -> None:
        """Stop one worker after its in-flight requests finish."""
        worker.retiring = True
        if self.workers.get(worker.runtime.key) is worker:
            del self.workers[worker.runtime.key]
            metrics.worker_ended(worker.runtime.name, cause)
        while worker.busy:
            await asyncio.sleep(0.01)
        await _kill(worker)

    async def stop_module(self, name: str, keep_version: str | None = None) -> None:
        """Stop a module's workers (all, or all but `keep_version`), letting requests finish."""
        for worker in [w for w in self.workers.values() if w.runtime.name == name]:
            if worker.runtime.version != keep_version:
                await self.stop_worker(worker)

    def retire_soon(self, keep: dict[str, str]) -> None:
        """From any thread: stop workers of modules not in `keep` (name → served version),
        or of another version, once their requests finish."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        stale = [
            w for w in list(self.workers.values()) if keep.get(w.runtime.name) != w.runtime.version
        ]
        for worker in stale:
            asyncio.run_coroutine_threadsafe(self.stop_worker(worker), loop)

    async def reap_idle(self) -> None:
        """Stop workers idle for longer than the idle limit."""
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if not worker.busy and now - worker.last_used > self.limits.idle_seconds:
                await self.stop_worker(worker, cause="idle")

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while self.workers:
            await asyncio.sleep(min(5.0, self.limits.idle_seconds))
            await self.reap_idle()

    async def close(self) -> None:
        """Stop every worker."""
        if self._reaper is not None:
            self._reaper.cancel()
        for worker in list(self.workers.values()):
            worker.retiring = True
            metrics.worker_ended(worker.runtime.name, "shutdown")
            await _kill(worker)
        self.workers.clear()
        if self.cgroups is not None:
            self.cgroups.close()

    def stats(self) -> dict[str, Any]:
        """Return live workers and crash counts (for `modhub doctor` and tests)."""
        return {
            "workers": {k: w.process.pid for k, w in self.workers.items()},
            "failures": {k: h.failures for k, h in self.health.items() if h.failures},
        }


async def _kill(worker: Worker) -> None:
    process = worker.process
    group = worker.group
    if process.returncode is None:
        # The sandbox's own processes are killed too: if one outlived bwrap it would hold
        # the pipes open, and waiting for the process would never end.
        tree = {*descendants(process.pid), *(group.pids() if group else ())}
        _kill_all([process.pid, *tree])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)
        deadline = time.monotonic() + 2
        while any(_running(pid) for pid in tree) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    if group is not None:
        # The group lists every process the worker started, even one that left its tree
        # or outlived a worker that crashed on its own; a process leaves it when reaped.
        deadline = time.monotonic() + 2
        while (left := group.pids()) and time.monotonic() < deadline:
            _kill_all(left)
            await asyncio.sleep(0.02)
        group.remove()
    for task in worker.tasks:
        if task is not asyncio.current_task():
            task.cancel()


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Return whether `pid` is still running (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _known(service: Any, services: dict[str, ServiceHandler]) -> str:
    """Return the name of a service for a span: one of ours, never any string a module sends."""
    return service if isinstance(service, str) and service in services else "unknown"


def _forget(tasks: list[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """Return a done-callback that drops a finished task from `tasks`."""

    def forget(task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            tasks.remove(task)

    return forget


def _decode(runtime: ModuleRuntime, handler: str, answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        if answer.get("error") == "not_found":
            raise HandlerMissing(
                f"handler '{handler}' of module '{runtime.name}': {answer.get('message')}",
                handler=handler,
            )
        raise HandlerFailed(
            f"module '{runtime.name}' failed to handle the request", module=runtime.name
        )
    if "result" in answer:
        return {"result": answer["result"]}
    try:
        return {
            "status": int(answer["status"]),
            "headers": dict(answer.get("headers") or {}),
            "body": base64.b64decode(answer.get("body") or ""),
            "contentType": str(answer.get("contentType") or "application/json"),
        }
    except (KeyError, TypeError, ValueError):
        raise BadWorkerResponse(f"module '{runtime.name}' sent a malformed response") from None
