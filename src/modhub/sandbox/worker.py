"""The module worker: runs one module's handlers in its own process.

This file is copied into the runtime folder and started with the module environment's
python (`python -I modhub_worker.py ...`). It uses only the standard library and
`modhub.sdk` (copied beside it). It starts already unprivileged: the launcher
(`sandbox/launch.py`) sets its resource limits with `prlimit` and its uid, capabilities
and `no_new_privs` with `setpriv` before the interpreter is exec'd, so nothing a module
ships (not even a `.pth` file of a dependency) runs with more than the module's rights.

Wire format, both directions: a 4-byte big-endian length, then a JSON object.
Requests:  {"id", "kind": "route"|"job"|"event"|"ping", "handler", "payload", "config",
            "requestId" (its module log lines name it), "traceparent" (W3C, when traced)}
Responses: {"id", "ok": true, "status", "headers", "body" (base64), "contentType"}
           {"id", "ok": true, "result"}                       (jobs, events)
           {"id", "ok": false, "error": "not_found"|"exception", "message"}
While a request runs, its handler may call module services (`sandbox/channel.py`):
           {"call", "rid", "service", "op", "args"} out, {"reply", "ok", "result"|"error"} in.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import os
import struct
import sys
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Write one length-prefixed JSON frame."""
    data = json.dumps(message, separators=(",", ":"), default=str).encode()
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """Read one frame; None at end of stream."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    data = _read_exactly(stream, size)
    if data is None:
        return None
    message: dict[str, Any] = json.loads(data)
    return message


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    """Read `size` bytes (a pipe gives at most 64 KiB a read); None at end of stream."""
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Channel:
    """Module services asked for by handlers: a `call` frame out, its `reply` frame back.

    Handlers in threads wait on a future; async handlers await it on the worker's loop.
    Replies are read by the main loop, which also reads the requests.
    """

    def __init__(self, out: BinaryIO, lock: threading.Lock) -> None:
        self.out = out
        self.lock = lock
        self.next = 0
        self.waiting: dict[int, Future[Any]] = {}
        self.counter = threading.Lock()

    def send(self, rid: int, service: str, op: str, args: dict[str, Any]) -> Future[Any]:
        """Send one call for the request `rid`; return the future of its reply."""
        future: Future[Any] = Future()
        with self.counter:
            self.next += 1
            number = self.next
            self.waiting[number] = future
        frame = {"call": number, "rid": rid, "service": service, "op": op, "args": args}
        with self.lock:
            write_frame(self.out, frame)
        return future

    def transports(self, rid: int) -> tuple[Any, Any]:
        """Return the blocking and the awaitable transport of request `rid`."""

        def call(service: str, op: str, args: dict[str, Any]) -> Any:
            return self.send(rid, service, op, args).result()

        async def acall(service: str, op: str, args: dict[str, Any]) -> Any:
            return await asyncio.wrap_future(self.send(rid, service, op, args))

        return call, acall

    def resolve(self, message: dict[str, Any]) -> None:
        """Hand a reply to the handler waiting for it."""
        from modhub.sdk import services

        future = self.waiting.pop(message.get("reply", -1), None)
        if future is None:
            return
        if message.get("ok"):
            future.set_result(message.get("result"))
        else:
            error = services.ERRORS.get(str(message.get("error")), services.ServiceError)
            future.set_exception(error(str(message.get("message", ""))))


class Worker:
    """Reads requests, runs handlers (sync in threads, async on a loop), writes answers."""

    def __init__(self, module_dir: Path, out: BinaryIO, concurrency: int) -> None:
        from modhub.sdk import loading

        self.loading = loading
        self.module_dir = module_dir
        self.out = out
        self.lock = threading.Lock()
        self.channel = Channel(out, self.lock)
        self.cache: dict[str, Any] = {}
        self.functions: dict[str, Any] = {}
        self.threads = ThreadPoolExecutor(max_workers=concurrency)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.log = logging.getLogger("module")

    def handle(self, message: dict[str, Any]) -> None:
        """Run one request and write its answer."""
        try:
            answer = self._run(message)
        except self.loading.HandlerNotFound as exc:
            answer = {"ok": False, "error": "not_found", "message": str(exc)}
        except BaseException as exc:
            self.log.error(
                "handler %s failed:\n%s",
                message.get("handler"),
                "".join(traceback.format_exception(exc)),
            )
            answer = {"ok": False, "error": "exception", "message": type(exc).__name__}
        answer["id"] = message["id"]
        with self.lock:
            write_frame(self.out, answer)

    def _run(self, message: dict[str, Any]) -> dict[str, Any]:
        from modhub.sdk import Event, Events, JobContext, ModuleCalls, Request, Store, User

        kind = message["kind"]
        if kind == "ping":
            return {"ok": True, "result": "pong"}
        ref = message["handler"]
        function = self.functions.get(ref)
        if function is None:
            function = self.loading.load_handler(self.module_dir, ref, self.cache)
            self.functions[ref] = function
        payload, config = message["payload"], message.get("config") or {}
        call, acall = self.channel.transports(message["id"])
        store, modules = Store(call, acall), ModuleCalls(call, acall)
        events = Events(call, acall)
        if kind == "event":
            event = Event(
                id=int(payload["id"]),
                name=payload["name"],
                source=payload["source"],
                payload=payload.get("payload"),
                emitted_at=datetime.fromisoformat(payload["emittedAt"]),
                attempt=payload.get("attempt", 1),
                config=config,
                logger=self.log,
                store=store,
                modules=modules,
                events=events,
            )
            return {"ok": True, "result": self._call(function, event)}
        if kind == "job":
            context = JobContext(
                job=payload["job"],
                scheduled_time=datetime.fromisoformat(payload["scheduledTime"]),
                attempt=payload.get("attempt", 1),
                config=config,
                run_id=payload.get("runId", ""),
                logger=self.log,
                store=store,
                modules=modules,
                events=events,
            )
            return {"ok": True, "result": self._call(function, context)}
        user = payload.get("user") or {}
        query = payload.get("query") or {}
        request = Request(
            method=payload["method"],
            path=payload["path"],
            path_params=payload.get("pathParams") or {},
            query={k: v[0] for k, v in query.items() if v},
            query_lists=query,
            headers=payload.get("headers") or {},
            body=base64.b64decode(payload.get("body") or ""),
            user=User(
                user.get("username", ""),
                user.get("role", ""),
                frozenset(user.get("permissions") or ()),
            )
            if user
            else None,
            config=config,
            request_id=payload.get("requestId", ""),
            logger=self.log,
            store=store,
            modules=modules,
            events=events,
        )
        response = self.loading.to_response(self._call(function, request))
        body, content_type = response.encoded()
        return {
            "ok": True,
            "status": response.status,
            "headers": response.headers,
            "body": base64.b64encode(body).decode(),
            "contentType": content_type,
        }

    def _call(self, function: Any, argument: Any) -> Any:
        import inspect

        label = _serving.get()  # the loop's tasks do not share this thread's context
        if inspect.iscoroutinefunction(function):
            coroutine = _await(function(argument), label)
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
        result = function(argument)
        if inspect.isawaitable(result):
            return asyncio.run_coroutine_threadsafe(_await(result, label), self.loop).result()
        return result

    def serve(self, message: dict[str, Any]) -> None:
        """Run one request (in a thread of the pool), its id in its log lines."""
        token = _serving.set(_label(message))
        try:
            self.handle(message)
        finally:
            _serving.reset(token)


async def _await(awaitable: Any, label: str = "") -> Any:
    _serving.set(label)  # this task's own context
    return await awaitable


# What a log line written while a request runs says of it: " [request <id>]" or
# " [run <id>]", and " trace <trace id>" when the server traces it (the traceparent of the
# frame). The id is the server's (a UUID, or a caller's X-Request-ID of safe characters).
_serving: ContextVar[str] = ContextVar("modhub_serving", default="")
LOG_FORMAT = "%(levelname)s %(name)s%(serving)s: %(message)s"


def _label(message: dict[str, Any]) -> str:
    rid = str(message.get("requestId") or "")
    if not rid:
        return ""
    trace = str(message.get("traceparent") or "").split("-")
    traced = f" trace {trace[1]}" if len(trace) == 4 and len(trace[1]) == 32 else ""
    return f" [{'run' if message.get('kind') == 'job' else 'request'} {rid}{traced}]"


class _Serving(logging.Filter):
    """Gives each record the label of the request its thread (or task) serves."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.serving = _serving.get()
        return True


def main(argv: list[str] | None = None) -> None:
    """Serve requests on stdin/stdout until EOF (limits and uid were set before the exec)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--module-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    protocol_in = os.fdopen(os.dup(0), "rb", buffering=0)
    protocol_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # print() in module code goes to the module log, not the protocol
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    stream = logging.StreamHandler(sys.stderr)
    stream.addFilter(_Serving())
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=[stream])
    threading.stack_size(1024 * 1024)  # thread stacks count against the memory limit
    os.chdir(args.module_dir)
    worker = Worker(Path(args.module_dir), protocol_out, args.concurrency)
    while (message := read_frame(protocol_in)) is not None:
        if "reply" in message:
            worker.channel.resolve(message)
        else:
            worker.threads.submit(worker.serve, message)
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
