"""Module-to-module calls: what a handler's `request.modules.call(...)` reaches.

A call goes through the route table and the worker pool like a request from outside,
never from one worker to another: the target must be listed in the caller's
`dependencies.modules`, be served (ENABLED) at a version inside that range, and have the
route; the route's permissions are checked against the user of the original request, or,
in a job, against the permissions the job's module declares. A chain is at most
`MAX_CALL_DEPTH` calls deep, and each call gets what is left of the original deadline.
Every refusal is a CallRefused whose detail says why.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import time
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, unquote

from modhub.auth import Principal
from modhub.errors import CallRefused, ModhubError, NotFound
from modhub.manifest import Manifest
from modhub.registry import Registry
from modhub.routes.dispatch import (
    METHODS,
    WITHHELD_REQUEST_HEADERS,
    Answer,
    ConfigSource,
    checked_answer,
    problem_answer,
    route_payload,
    runnable,
    valid_header,
)
from modhub.routes.table import RouteTableHolder
from modhub.sandbox import WorkerPool
from modhub.sandbox.channel import MAX_CALL_DEPTH, CallerContext
from modhub.semver import satisfies

CALLER_HEADER = "x-modhub-caller"
DEPTH_HEADER = "x-modhub-call-depth"
PLATFORM_HEADERS = "x-modhub-"  # set by the platform only: a caller's own are dropped
MAX_PATH = 2048
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")  # controls and spaces: not in a request line


class ModuleCalls:
    """Answers the "modules" service of module workers (`handle` is its ServiceHandler)."""

    def __init__(
        self,
        registry: Registry,
        holder: RouteTableHolder,
        pool: WorkerPool,
        configs: ConfigSource,
        *,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.pool = pool
        self.configs = configs
        self.max_body_bytes = max_body_bytes
        self._manifest = functools.lru_cache(maxsize=1024)(  # a version's manifest is fixed
            lambda name, version: registry.version_info(name, version)[0]
        )
        # On the embedded database the lookups run on the loop, as the dispatcher's do
        # (`inline_lookups`): a cached manifest and one in-process read of one row cost less
        # than a trip to a thread and back.
        self._inline = registry.db.embedded

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        """Run `call`: one request to a route of a module the caller depends on, answered
        as `{"status", "headers", "body" (base64), "contentType"}`."""
        if op != "call":
            raise CallRefused(f"the modules service has no operation '{op}'")
        call = _Call(args, self.max_body_bytes)
        # Both reads at once (the caller's manifest is cached): on the loop on the embedded
        # database, else in one trip to a thread.
        lookup = (context.module, context.version, call.target)
        caller, config = (
            self._load(*lookup) if self._inline else await asyncio.to_thread(self._load, *lookup)
        )
        wanted = caller.dependencies.modules.get(call.target)
        if wanted is None:
            raise CallRefused(
                f"'{context.module}' does not list '{call.target}' in dependencies.modules"
            )
        if context.depth + 1 > MAX_CALL_DEPTH:
            raise CallRefused(
                f"the call chain is deeper than {MAX_CALL_DEPTH} calls "
                f"({context.module} → {call.target} would be call {context.depth + 1})"
            )
        left = context.deadline - time.monotonic()
        if left <= 0:
            raise CallRefused("no time is left of the request or job that makes the call")
        table = self.holder.table  # this one table object serves the whole call
        routes = table.get(call.target)
        if routes is None:
            status = await asyncio.to_thread(self._status, call.target)
            raise CallRefused(f"'{call.target}' is not enabled ({status})")
        if not satisfies(routes.version, wanted):
            raise CallRefused(
                f"'{call.target}' is at version {routes.version}, "
                f"outside the declared range {wanted}"
            )
        try:
            route, params = routes.match(call.method, call.segments)
            runtime = runnable(routes, route)
        except NotFound:
            raise CallRefused(f"'{call.target}' has no route {call.method} {call.path}") from None
        except ModhubError as exc:  # a method not allowed, a handler that cannot run
            raise CallRefused(f"'{call.target}': {exc.detail}") from None
        user = context.user
        if user is None:
            if context.job is None:
                raise CallRefused("a call needs the user of a request or a job to act for")
            user = _acting_module(caller)
        principal = _principal(user)
        for permission in route.permissions:
            if not principal.can(permission):
                raise CallRefused(
                    f"{principal.username} lacks the permission '{permission}' "
                    f"that {call.method} {call.path} of '{call.target}' requires"
                )
        if config is None:
            raise CallRefused(f"'{call.target}' is not installed")
        limit_ms = max(1, int(min(left * 1000, runtime.timeout_ms)))
        request_id = str(uuid.uuid4())
        payload = route_payload(
            call.method,
            call.path,
            params,
            call.query,
            {
                **call.headers,
                CALLER_HEADER: context.module,
                DEPTH_HEADER: str(context.depth + 1),
            },
            call.body,
            user,
            request_id,
        )
        inner = replace(
            context.deeper(call.target, routes.version),
            user=user,
            deadline=min(context.deadline, time.monotonic() + limit_ms / 1000),
            request_id=request_id,
        )
        self.pool.logs[call.target].append(
            f"modhub: called by {context.module} ({call.method} {call.path}, "
            f"call depth {inner.depth}, request {request_id})"
        )
        try:
            result = await self.pool.call(
                runtime, "route", route.handler, payload, config, timeout_ms=limit_ms, context=inner
            )
            answer = checked_answer(result, call.target)
        except CallRefused:
            raise
        except ModhubError as exc:  # the callee failed: answered as to a request from outside
            answer = problem_answer(exc, request_id)
        return _encoded(answer)

    def _load(
        self, module: str, version: str, target: str
    ) -> tuple[Manifest, dict[str, Any] | None]:
        """Return the caller's manifest and the target's config (None: not installed)."""
        try:
            config = self.configs.config_for_code(target)
        except NotFound:
            config = None
        return self._manifest(module, version), config

    def _status(self, name: str) -> str:
        """Return a module's status for a refusal (blocking: in a thread)."""
        try:
            return self.registry.get(name).status
        except NotFound:
            return "not installed"


class _Call:
    """The checked arguments of one call (CallRefused names the first bad field)."""

    def __init__(self, args: dict[str, Any], max_body_bytes: int) -> None:
        target, method, path = args.get("module"), args.get("method"), args.get("path")
        if not isinstance(target, str) or not target:
            raise CallRefused("the call's 'module' must be a module name")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise CallRefused(f"the call's 'method' must be one of {', '.join(METHODS)}")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
            raise CallRefused(f"the call's 'path' must start with '/' (at most {MAX_PATH} chars)")
        if _BAD_PATH.search(path):
            raise CallRefused("the call's 'path' has a space or a control character")
        self.target = target
        self.method = method.upper()
        raw, _, query_string = path.partition("?")
        self.segments = [unquote(part) for part in raw[1:].split("/")] if raw != "/" else []
        self.path = unquote(raw)
        self.query = _query(query_string, args.get("query"))
        self.headers = _headers(args.get("headers"))
        self.body = b""
        if "json" in args:
            self.body = json.dumps(args["json"], separators=(",", ":")).encode()
            self.headers["content-type"] = "application/json"
        if len(self.body) > max_body_bytes:
            raise CallRefused(f"the call's 'json' is over {max_body_bytes} bytes")


def _query(query_string: str, query: Any) -> dict[str, list[str]]:
    """Return the query lists of a call: its path's query string, then its `query`."""
    lists: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        lists.setdefault(key, []).append(value)
    if query is None:
        return lists
    if not isinstance(query, dict):
        raise CallRefused("the call's 'query' must be an object of names to values")
    for key, values in query.items():
        values = values if isinstance(values, list) else [values]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise CallRefused(f"the call's query parameter '{key}' must be strings or numbers")
        lists.setdefault(str(key), []).extend(str(v) for v in values)
    return lists


def _headers(headers: Any) -> dict[str, str]:
    """Return the caller's headers to forward: never credentials, hop-by-hop or x-modhub-*."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise CallRefused("the call's 'headers' must be an object of names to strings")
    forwarded: dict[str, str] = {}
    for name, value in headers.items():
        if not valid_header(name, value):
            raise CallRefused(f"the call's header {str(name)[:64]!r} is not a valid header")
        key = name.lower()
        if key in WITHHELD_REQUEST_HEADERS or key == "content-length":
            continue
        if not key.startswith(PLATFORM_HEADERS):
            forwarded[key] = f"{forwarded[key]}, {value}" if key in forwarded else value
    return forwarded


def _acting_module(manifest: Manifest) -> dict[str, Any]:
    """Return whom a job's calls act for: its module, with the permissions it declares."""
    return {
        "username": f"module:{manifest.name}",
        "role": "module",
        "permissions": sorted(manifest.permissions),
    }


def _principal(user: dict[str, Any]) -> Principal:
    permissions = user.get("permissions")
    return Principal(
        str(user.get("username")),
        str(user.get("role")),
        frozenset(p for p in permissions if isinstance(p, str))
        if isinstance(permissions, list)
        else frozenset(),
    )


def _encoded(answer: Answer) -> dict[str, Any]:
    """Return an answer as the modules service sends it back to the caller's worker."""
    return {
        "status": answer.status,
        "headers": {k: v for k, v in answer.headers.items() if k.lower() != "content-type"},
        "body": base64.b64encode(answer.body).decode("ascii"),
        "contentType": answer.content_type,
    }
