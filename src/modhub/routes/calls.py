"""Module-to-module calls: what a handler's `request.modules.call(...)` reaches.

A call goes through the route table and the worker pool like a request from outside,
never from one worker to another: the target must be listed in the caller's
`dependencies.modules`, be served (ENABLED) at a version inside that range, and have the
route; the route's permissions are checked against the user of the original request, or,
in a job, against the permissions the job's module declares. A chain is at most
`MAX_CALL_DEPTH` calls deep, and each call gets what is left of the original deadline.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
import uuid
from typing import Any

from modhub.errors import CallRefused, ModhubError, NotFound
from modhub.manifest import Manifest
from modhub.registry import Registry
from modhub.routes.dispatch import WITHHELD_REQUEST_HEADERS, ModuleConfigs
from modhub.routes.table import RouteTableHolder
from modhub.sandbox import WorkerPool
from modhub.sandbox.channel import MAX_CALL_DEPTH, CallerContext
from modhub.semver import satisfies

CALLER_HEADER = "x-modhub-caller"
DEPTH_HEADER = "x-modhub-call-depth"


class ModuleCalls:
    """Answers the "modules" service of module workers."""

    def __init__(
        self,
        registry: Registry,
        holder: RouteTableHolder,
        pool: WorkerPool,
        configs: ModuleConfigs,
    ) -> None:
        self.holder = holder
        self.pool = pool
        self.configs = configs
        self._manifest = functools.lru_cache(maxsize=1024)(
            lambda name, version: registry.version_info(name, version)[0]
        )

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        """Run `call`: one request to a route of a module the caller depends on."""
        if op != "call":
            raise CallRefused(f"the modules service has no operation '{op}'")
        target, method, path = args.get("module"), args.get("method"), args.get("path")
        if not (isinstance(target, str) and isinstance(method, str) and isinstance(path, str)):
            raise CallRefused("a call needs a module, a method and a path")
        caller = await asyncio.to_thread(self._manifest, context.module, context.version)
        wanted = caller.dependencies.modules.get(target)
        if wanted is None:
            raise CallRefused(
                f"'{context.module}' does not list '{target}' in dependencies.modules"
            )
        if context.depth + 1 > MAX_CALL_DEPTH:
            raise CallRefused(f"the call chain is deeper than {MAX_CALL_DEPTH} calls")
        left = context.deadline - time.monotonic()
        if left <= 0:
            raise CallRefused("no time is left of the request that makes the call")
        table = self.holder.table
        routes = table.get(target)
        if routes is None:
            raise CallRefused(f"'{target}' is not enabled")
        if not satisfies(routes.version, wanted):
            raise CallRefused(f"'{target}' is at {routes.version}, outside the declared {wanted}")
        try:
            route, params = table.match(target, method, path.split("?", 1)[0])
        except NotFound:
            raise CallRefused(f"'{target}' has no route {method.upper()} {path}") from None
        except ModhubError as exc:
            raise CallRefused(f"'{target}': {exc.detail}") from None
        user = context.user or _acting_module(caller)
        for permission in route.permissions:
            if not _holds(user.get("permissions") or [], permission):
                raise CallRefused(
                    f"{user.get('username')} lacks the permission '{permission}' "
                    f"that {method.upper()} {path} of '{target}' requires"
                )
        runtime = routes.runtime
        if runtime is None or route.missing is not None:
            raise CallRefused(f"'{target}' cannot run {method.upper()} {path}")
        config = await asyncio.to_thread(self.configs.config_for_code, target)
        request_id = str(uuid.uuid4())
        payload: dict[str, Any] = {
            "method": method.upper(),
            "path": path,
            "pathParams": params,
            "query": _query(args.get("query")),
            "headers": _headers(args.get("headers"), context),
            "body": _body(args),
            "user": user,
            "requestId": request_id,
        }
        self.pool.logs[target].append(
            f"called by {context.module} ({method.upper()} {path}, depth {context.depth + 1})"
        )
        inner = CallerContext(
            module=target,
            version=routes.version,
            user=user,
            job=context.job,
            deadline=context.deadline,
            depth=context.depth + 1,
            request_id=request_id,
        )
        try:
            result = await self.pool.call(
                runtime,
                "route",
                route.handler,
                payload,
                config,
                timeout_ms=max(1, int(min(left * 1000, runtime.timeout_ms))),
                context=inner,
            )
        except ModhubError as exc:  # the callee failed: an answer, as from outside
            problem = {"title": exc.title, "status": exc.status, "detail": exc.detail}
            return {
                "status": exc.status,
                "headers": {},
                "body": base64.b64encode(json.dumps(problem).encode()).decode(),
                "contentType": "application/problem+json",
            }
        return {
            "status": result["status"],
            "headers": result["headers"],
            "body": base64.b64encode(result["body"]).decode(),
            "contentType": result["contentType"],
        }


def _acting_module(manifest: Manifest) -> dict[str, Any]:
    """Return who a job's calls act as: its module, with the permissions it declares."""
    return {
        "username": f"module:{manifest.name}",
        "role": "module",
        "permissions": sorted(manifest.permissions),
    }


def _holds(permissions: list[str], permission: str) -> bool:
    scope = permission.split(":", 1)[0]
    return bool({"*", permission, f"{scope}:*"} & set(permissions))


def _query(query: Any) -> dict[str, list[str]]:
    if not isinstance(query, dict):
        return {}
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in query.items()}


def _headers(headers: Any, context: CallerContext) -> dict[str, str]:
    forwarded = {
        str(k).lower(): str(v)
        for k, v in (headers.items() if isinstance(headers, dict) else ())
        if str(k).lower() not in WITHHELD_REQUEST_HEADERS
    }
    forwarded[CALLER_HEADER] = context.module
    forwarded[DEPTH_HEADER] = str(context.depth + 1)
    if "json" in forwarded.get("content-type", "") or "content-type" not in forwarded:
        forwarded.setdefault("content-type", "application/json")
    return forwarded


def _body(args: dict[str, Any]) -> str:
    if "json" not in args:
        return ""
    return base64.b64encode(json.dumps(args["json"]).encode()).decode()
