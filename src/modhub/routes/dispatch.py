"""One catch-all route serves every module route: `/api/v1/m/{module}{path}`.

Per request: authenticate the caller, match the path in the current route table, check
the route's permissions, read the module's config, call the handler in the module's
worker, and turn its answer into the HTTP response. Every failure is a problem+json
response carrying the request id, which is also sent as `X-Request-Id`.
"""

from __future__ import annotations

import base64
import inspect
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter
from sqlalchemy import bindparam, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modhub import metrics, telemetry
from modhub.api.problems import MEDIA_TYPE, problem
from modhub.auth import Principal
from modhub.db.models import Module
from modhub.errors import BadWorkerResponse, Forbidden, HandlerMissing, ModhubError, NotFound
from modhub.registry import Registry
from modhub.registry import config as configs
from modhub.routes.table import (
    CompiledRoute,
    MethodNotAllowed,
    ModuleRoutes,
    RouteTableHolder,
    split_path,
)

if TYPE_CHECKING:
    from modhub.sandbox import ModuleRuntime

log = logging.getLogger("modhub.routes")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REQUEST_ID_HEADER = "X-Request-Id"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The caller's credentials stay with the platform: a module never sees them.
WITHHELD_REQUEST_HEADERS = HOP_BY_HOP | {"authorization", "cookie"}
# Set by the platform itself, whatever the handler says.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length", "content-type", "x-request-id"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NO_BODY = (204, 304)
MATCHED = "modhub.route"  # the scope's (method, template) of the route a request reached


class Authenticator(Protocol):
    """Names the caller of a request (modhub.auth.AuthService)."""

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller of an `Authorization` header value, or raise Unauthorized."""
        ...


class ConfigSource(Protocol):
    """Gives a module's config with secrets in clear (ModuleConfigs, or the Registry)."""

    def config_for_code(self, name: str) -> dict[str, Any]:
        """Return the config of module `name` for its own handlers."""
        ...


class Pool(Protocol):
    """Runs handlers in module workers (modhub.sandbox.WorkerPool)."""

    async def call(
        self,
        runtime: ModuleRuntime,
        kind: str,
        handler: str,
        payload: dict[str, Any],
        config: dict[str, Any],
    ) -> dict[str, Any]:
        """Run `handler` for `payload` and return its answer."""
        ...


class ModuleServices(Protocol):
    """What dispatching needs from the platform's services."""

    @property
    def auth(self) -> Authenticator:
        """Return the authenticator."""
        ...

    @property
    def routes(self) -> RouteTableHolder:
        """Return the holder of the current route table."""
        ...

    @property
    def pool(self) -> Pool:
        """Return the worker pool."""
        ...

    @property
    def module_configs(self) -> ConfigSource:
        """Return where module configs come from."""
        ...


_CONFIG = select(Module.config).where(Module.name == bindparam("name"))


class ModuleConfigs:
    """Each module's config in clear, read from the database, or kept (`cached`).

    Uncached, one indexed single-column read per request keeps every process up to date
    the moment a config change commits. Cached, a module's config is read once and kept
    until `forget(name)` (this process's registry listener, after each change commits) or
    `forget_all()` (the route sync's reload: another process's change, heard through its
    notification or the registry fingerprint poll): no read on the request path, at the
    cost of serving another node's change as late as its routes are. Either way the
    secrets are decrypted again only when the stored value differs from the last one seen.
    """

    def __init__(self, registry: Registry, *, cached: bool = False) -> None:
        engine = registry.db.engine
        # One statement: on PostgreSQL no BEGIN and ROLLBACK round trips around it.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._box = registry.box
        self.cached = cached
        self._seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._kept: dict[str, dict[str, Any]] = {}  # cached: served without a read
        self._generation = 0  # moves on every forget: a read begun before it is not kept
        self._lock = threading.Lock()

    def config_for_code(self, name: str) -> dict[str, Any]:
        """Return the config of module `name` with secrets in clear (NotFound if it is gone)."""
        kept = self._kept.get(name)
        if kept is not None:
            return dict(kept)
        generation = self._generation
        # A Core connection, not an ORM session: the session doubled this read's cost.
        with self._reader.connect() as connection:
            stored = connection.execute(_CONFIG, {"name": name}).scalar()
        if stored is None:
            raise NotFound(f"no module named '{name}'", module=name)
        seen = self._seen.get(name)
        clear = seen[1] if seen is not None and seen[0] == stored else None
        if clear is None:
            clear = configs.unsealed(stored, self._box)
        with self._lock:
            self._seen[name] = (stored, clear)
            if self.cached and generation == self._generation:
                self._kept[name] = clear
        return dict(clear)

    def forget(self, name: str) -> None:
        """Drop what is remembered of module `name` (after a change to it commits)."""
        with self._lock:
            self._generation += 1
            self._seen.pop(name, None)
            self._kept.pop(name, None)

    def forget_all(self) -> None:
        """Read every module's config again (another process may have changed any)."""
        with self._lock:
            self._generation += 1
            self._kept.clear()


@dataclass(frozen=True)
class _Admitted:
    """A request that passed authentication, matching and permissions."""

    route: CompiledRoute
    params: dict[str, str]
    principal: Principal
    runtime: ModuleRuntime
    config: dict[str, Any]


def _app_services(request: Request) -> ModuleServices:
    found: ModuleServices = request.app.state.services
    return found


class ModuleDispatcher:
    """Serves module routes from the route table of the services `services` returns.

    Authentication and the config read are blocking database calls: they run in a worker
    thread, or on the event loop with `inline_lookups` (faster by a thread hand-off, about
    0.1-0.2 ms a request and more under load, but a slow database then stalls every
    request: only for the embedded SQLite database).
    """

    def __init__(
        self,
        services: Callable[[Request], ModuleServices] = _app_services,
        *,
        inline_lookups: bool = False,
    ) -> None:
        self._services = services
        self._inline = inline_lookups

    async def dispatch(self, request: Request) -> Response:
        """Answer one request to a module route (the endpoint of the catch-all route)."""
        # The id of the request being served (the API's middleware gives every request one).
        request_id = telemetry.request_id() or str(uuid.uuid4())
        started = time.perf_counter()
        try:
            response = await self._answer(request, request_id)
        except HTTPException:
            raise  # the body limit's 413, answered by the middleware
        except ModhubError as exc:
            response = await _problem(request, exc, request_id)
        except Exception:
            log.exception("module route failed (request %s)", request_id)
            response = await _problem(
                request,
                ModhubError("an unexpected error occurred; see the server log"),
                request_id,
            )
        response.headers[REQUEST_ID_HEADER] = request_id
        module, route = request.path_params["module"], request.scope.get(MATCHED)
        table = self._services(request).routes.table
        metrics.observe_route(table, module, route, response.status_code, started)
        return response

    async def _answer(self, request: Request, request_id: str) -> Response:
        svc = self._services(request)
        module: str = request.path_params["module"]
        lookup = (
            svc,
            request.headers.get("authorization"),
            module,
            request.method,
            module_segments(request, module),
        )
        admitted = _admit(*lookup) if self._inline else await run_in_threadpool(_admit, *lookup)
        request.scope[MATCHED] = (admitted.route.method, admitted.route.path)
        payload = route_payload(
            request.method,
            "/" + request.path_params.get("path", ""),
            admitted.params,
            _query(request),
            _forwarded_headers(request),
            await request.body(),
            user_of(admitted.principal),
            request_id,
        )
        result = await svc.pool.call(
            admitted.runtime, "route", admitted.route.handler, payload, admitted.config
        )
        return to_response(result, module)


def _admit(
    svc: ModuleServices,
    authorization: str | None,
    module: str,
    method: str,
    segments: list[str],
) -> _Admitted:
    """Authenticate, match, check permissions and load the config (blocking: in a thread)."""
    principal = svc.auth.authenticate(authorization)
    table = svc.routes.table  # this one table object serves the whole request
    route, params = table.match(module, method, segments)
    for permission in route.permissions:
        if not principal.can(permission):
            raise Forbidden(permission)
    telemetry.note(user=principal.username, module=module, route=route.path)
    runtime = runnable(table[module], route)
    config = svc.module_configs.config_for_code(module)
    return _Admitted(route, params, principal, runtime, config)


def runnable(routes: ModuleRoutes, route: CompiledRoute) -> ModuleRuntime:
    """Return the runtime that runs `route` of `routes`; raise HandlerMissing if none can."""
    if route.missing is not None or routes.runtime is None:
        raise HandlerMissing(
            route.missing or f"handler '{route.handler}' cannot run",
            module=routes.name,
            handler=route.handler,
        )
    return routes.runtime


def user_of(principal: Principal) -> dict[str, Any]:
    """Return the `user` of a route payload: who the request acts for."""
    return {
        "username": principal.username,
        "role": principal.role,
        "permissions": sorted(principal.permissions),
    }


def route_payload(
    method: str,
    path: str,
    params: dict[str, str],
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes,
    user: dict[str, Any],
    request_id: str,
) -> dict[str, Any]:
    """Return what a route handler's worker receives for one request (`path` decoded,
    `headers` already without WITHHELD_REQUEST_HEADERS)."""
    return {
        "method": method,
        "path": path,
        "pathParams": params,
        "query": query,
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
        "user": user,
        "requestId": request_id,
    }


def module_segments(request: Request, module: str) -> list[str]:
    """Return the decoded segments of the path after `/m/{module}`.

    The raw path is split before decoding, so `%2F` stays inside its segment.
    """
    raw = request.scope.get("raw_path")
    marker = f"/m/{module}".encode()
    if isinstance(raw, bytes):
        raw = raw.split(b"?", 1)[0]
        at = raw.find(marker + b"/")
        if at < 0 and raw.endswith(marker):
            return []
        if at >= 0:
            rest = raw[at + len(marker) + 1 :]
            if not rest:
                return []
            return [unquote_to_bytes(part).decode("utf-8", "replace") for part in rest.split(b"/")]
    return split_path("/" + request.path_params.get("path", ""))


def _query(request: Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def _forwarded_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        if key in WITHHELD_REQUEST_HEADERS:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


@dataclass(frozen=True)
class Answer:
    """A worker's answer to a route request, checked: what the caller may be given."""

    status: int
    headers: dict[str, str]  # with its content-type, without DROPPED_RESPONSE_HEADERS
    body: bytes  # empty for 204 and 304
    content_type: str


def to_response(result: dict[str, Any], module: str) -> Response:
    """Return the HTTP response for a worker's answer; raise BadWorkerResponse if it is bad."""
    answer = checked_answer(result, module)
    return Response(
        content=answer.body,
        status_code=answer.status,
        headers=answer.headers,
        media_type=answer.content_type,
    )


def checked_answer(result: dict[str, Any], module: str) -> Answer:
    """Return a worker's answer checked; raise BadWorkerResponse if it is bad."""
    status = result.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise BadWorkerResponse(
            f"module '{module}' answered with an invalid status {status!r}", module=module
        )
    body = result.get("body", b"")
    if not isinstance(body, bytes):
        raise BadWorkerResponse(f"module '{module}' answered with a body that is not bytes")
    content_type = result.get("contentType") or "application/octet-stream"
    headers: dict[str, str] = {}
    for name, value in {"content-type": content_type, **(result.get("headers") or {})}.items():
        if not valid_header(name, value):
            raise BadWorkerResponse(
                f"module '{module}' answered with an invalid header {str(name)[:64]!r}",
                module=module,
            )
        if name.lower() not in DROPPED_RESPONSE_HEADERS:
            headers[name] = value
    return Answer(status, headers, b"" if status in _NO_BODY else body, content_type)


def problem_answer(exc: ModhubError, request_id: str) -> Answer:
    """Return the problem answer a request from outside gets for `exc`."""
    extra = {**exc.extra, "requestId": request_id}
    body = problem(exc.status, exc.title, exc.detail, exc.kind, errors=exc.errors, **extra).body
    return Answer(exc.status, {"content-type": MEDIA_TYPE}, bytes(body), MEDIA_TYPE)


def valid_header(name: Any, value: Any) -> bool:
    """Return whether `name: value` can be sent as an HTTP header."""
    if not isinstance(name, str) or not isinstance(value, str):
        return False
    if not _HEADER_NAME.fullmatch(name) or _BAD_HEADER_VALUE.search(value):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


async def _problem(request: Request, exc: ModhubError, request_id: str) -> Response:
    """Return the app's problem response for `exc`, with the request id in it."""
    exc = _with_extra(exc, requestId=request_id)
    handler = next(
        (
            request.app.exception_handlers[cls]
            for cls in type(exc).__mro__
            if cls in request.app.exception_handlers
        ),
        None,
    )
    if handler is None:
        response: Response = problem(
            exc.status, exc.title, exc.detail, exc.kind, errors=exc.errors, **exc.extra
        )
    else:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allowed)
    return response


def _with_extra(exc: ModhubError, **extra: Any) -> ModhubError:
    """Return a copy of `exc` with more extra fields (the same error may be raised twice)."""
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.extra = {**exc.extra, **extra}
    return clone


def module_router(
    services: Callable[[Request], ModuleServices] = _app_services,
    *,
    inline_lookups: bool = False,
) -> APIRouter:
    """Return the router of the catch-all module routes; include it with prefix `/api/v1`.

    `services(request)` returns the services to use (by default `request.app.state.services`);
    see ModuleDispatcher for `inline_lookups`.
    """
    dispatcher = ModuleDispatcher(services, inline_lookups=inline_lookups)
    router = APIRouter()
    for path in ("/m/{module}/{path:path}", "/m/{module}"):
        router.add_route(path, dispatcher.dispatch, methods=list(METHODS), include_in_schema=False)
    return router
