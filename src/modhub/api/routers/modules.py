"""The seed's module endpoints: register, list, read, validate, status, config, delete."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field
from sqlalchemy import Connection

from modhub.api.deps import (
    Bearer,
    ServicesDep,
    admit,
    authorization,
    authorize,
    lookup,
    require,
)
from modhub.api.operations import ACCEPTED, outcome
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.errors import NotFound
from modhub.lifecycle.service import quota_bytes
from modhub.registry import Status, views
from modhub.registry.cache import Answer, to_json
from modhub.registry.rows import aggregated_detail
from modhub.registry.types import (
    ConfigView,
    ModuleDetail,
    ModulePage,
    ModuleView,
    Plan,
    RemovalPlan,
    Shape,
)
from modhub.services import Services

router = APIRouter(prefix="/modules", tags=["modules"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.MODULES_WRITE))]
Admin = Annotated[Principal, Depends(require(Permission.MODULES_ADMIN))]
Cascade = Annotated[bool, Query(description="Also change dependencies or dependents")]
DryRun = Annotated[bool, Query(alias="dryRun", description="Answer with the plan only")]
KeepData = Annotated[
    bool, Query(alias="keepData", description="Keep the module's store for a later install")
]
MAX_OFFSET = 2**31 - 1
MAX_DEPTH = 64


def _storable(value: Any, where: str = "/", depth: int = 0) -> None:
    """Refuse what could be stored but never served again (NaN, lone surrogates, deep
    nesting) or not stored at all (NUL characters on PostgreSQL)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a JSON number")
    texts = [value] if isinstance(value, str) else list(value) if isinstance(value, dict) else []
    for text in texts:
        if "\x00" in text:
            raise ValueError(f"{where}: text must not contain NUL characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text must be valid Unicode (no lone surrogates)") from None
    if isinstance(value, dict):
        for key, item in value.items():
            _storable(item, f"{where.rstrip('/')}/{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable(item, f"{where.rstrip('/')}/{index}", depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _storable(value)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]


class ManifestBody(Shape):
    manifest: JsonObject = Field(description="The module.json document")


class StatusBody(Shape):
    status: Literal["ENABLED", "DISABLED"]


class ConfigBody(Shape):
    config: JsonObject


class ValidationIssue(Shape):
    path: str
    code: str
    message: str


class ValidationOut(Shape):
    valid: bool
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]


@router.get("", response_model=ModulePage, responses=responses(401, 403, 422))
async def list_modules(
    svc: ServicesDep,
    _principal: Reader,
    status: Status | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """List modules, filtered by status and a search text, a page at a time."""
    # The page as JSON, from the registry's read cache when it holds it: then no thread,
    # no database and no serialization (the cache is dropped on every registry change).
    cached = svc.registry.cached(svc.registry.list_key(status, q, limit, offset))
    body = (
        cached[0]
        if cached is not None
        else await lookup(
            svc, svc.registry.list_json, status=status, q=q, limit=limit, offset=offset
        )
    )
    return Response(body, media_type="application/json")


@router.post("", status_code=201, responses=responses(401, 403, 409, 413, 422))
def register(body: ManifestBody, svc: ServicesDep, principal: Admin) -> ModuleDetail:
    """Register a manifest: a new module, or a new available version of a known one."""
    return svc.registry.register(body.manifest, actor=principal.username)


@router.post("/validate", responses=responses(401, 403, 413, 422))
def validate(body: ManifestBody, svc: ServicesDep, _principal: Reader) -> ValidationOut:
    """Validate a manifest without registering it, as this server's registration would."""
    return ValidationOut.model_validate(svc.registry.validate(body.manifest).public())


def _view_parts(svc: Services, name: str, connection: Connection) -> tuple[bytes, bytes]:
    """Return a module's ModuleView JSON around its store's key count and bytes: what
    comes before the key count, and what comes after the bytes (the storage limit)."""
    return _parts(svc, svc.registry.get(name, connection))


def _parts(svc: Services, detail: ModuleDetail) -> tuple[bytes, bytes]:
    runtime = detail.manifest.get("runtime") or {}
    megabytes = runtime.get("storageMb") if isinstance(runtime, dict) else None
    limit = quota_bytes(megabytes if isinstance(megabytes, int) else None, svc.settings)
    # A ModuleView is the detail's fields, then `storage` ({keys, bytes, limitBytes}).
    body = to_json(detail)
    return body[:-1] + b',"storage":{"keys":', b',"limitBytes":%d}}' % limit


def _authorized_view(svc: Services, header: str | None, name: str, parts: Answer | None) -> bytes:
    """Return a module's ModuleView as JSON if the caller of `header` holds modules:read
    (else 401 or 403): `parts` (or the cached or read ones) around its store's use.

    SQLite: the caller, the detail (unless `parts`) and the store's use, one statement
    each on one connection; the caller first, on every request (no token is cached).
    """
    with svc.db.query() as connection:
        authorize(svc, header, Permission.MODULES_READ, connection)
        if parts is None:
            parts = svc.registry.read_cached(
                ("view", name), lambda: _view_parts(svc, name, connection)
            )
        usage = svc.store.usage(name, connection)  # one indexed lookup (not cached)
    return _complete(parts, usage.keys, usage.bytes)


def _authorized_view_pg(
    svc: Services, header: str | None, name: str, parts: Answer | None
) -> bytes:
    """`_authorized_view` on PostgreSQL: the caller, the store's use and (unless `parts`)
    the detail in one statement (registry/views.py), the caller read on every request and
    checked before anything of the module is used."""
    credential = svc.auth.credential(header)
    generation = svc.registry.reads.generation  # before the read: see ReadCache.put
    with svc.db.query() as connection:
        row = views.read(connection, credential, name, svc.store.clock(), parts is None)
    principal = svc.auth.principal(credential, row, row.permissions if row else ())
    admit(principal, Permission.MODULES_READ)
    assert row is not None  # else `principal` raised
    if parts is None:
        if row.id is None:
            raise NotFound(f"no module named '{name}'", module=name)
        parts = _parts(svc, aggregated_detail(row._mapping))
        svc.registry.reads.put(("view", name), parts, generation)
    return _complete(parts, row.store_keys or 0, row.store_bytes or 0)


def _complete(parts: Answer, keys: int, size: int) -> bytes:
    head, tail = parts
    return b'%s%d,"bytes":%d%s' % (head, keys, size, tail)


@router.get("/{name}", response_model=ModuleView, responses=responses(401, 403, 404))
async def get_module(name: str, svc: ServicesDep, credentials: Bearer) -> Response:
    """Return a module with its manifest, config, dependencies, dependents, versions and
    the use of its store."""
    # The view but its store's use is cached by the registry (dropped on every change).
    # The caller is checked in the same thread hand-off and read as the view (as strictly
    # as `Reader`: on every request, before the module is used); a Response skips
    # response_model's validation.
    parts = svc.registry.cached(("view", name))
    header = authorization(credentials)
    read = _authorized_view if svc.db.embedded else _authorized_view_pg
    body = await lookup(svc, read, svc, header, name, parts)
    return Response(body, media_type="application/json")


@router.put("/{name}/status", responses={202: ACCEPTED, **responses(401, 403, 404, 409, 422)})
def set_status(
    name: str,
    body: StatusBody,
    svc: ServicesDep,
    principal: Writer,
    cascade: Cascade = False,
    dry_run: DryRun = False,
) -> ModuleDetail | Plan:
    """Enable or disable a module (a REGISTERED module is installed on the way).

    Answers 202 with the operation when the work takes longer than the wait setting.
    """
    result = svc.lifecycle.set_status(
        name, Status(body.status), actor=principal.username, cascade=cascade, dry_run=dry_run
    )
    if isinstance(result, Plan):
        return result
    answer: ModuleDetail = outcome(svc, result)
    return answer


@router.put("/{name}/config", responses=responses(401, 403, 404, 422))
def set_config(name: str, body: ConfigBody, svc: ServicesDep, principal: Writer) -> ConfigView:
    """Replace a module's configuration; secrets sent as ******** keep their value."""
    return ConfigView(config=svc.registry.set_config(name, body.config, actor=principal.username))


@router.delete(
    "/{name}",
    status_code=204,
    response_model=None,
    responses={
        200: {"model": RemovalPlan, "description": "The plan, with dryRun"},
        **responses(401, 403, 404, 409),
    },
)
def delete_module(
    name: str,
    svc: ServicesDep,
    principal: Admin,
    dry_run: DryRun = False,
    keep_data: KeepData = False,
) -> Response:
    """Remove a module: disable it, then delete its rows, config, files, environments and,
    unless `keepData=true`, its store.

    Refused while other modules depend on it; 202 with the operation when it takes long.
    The dry-run plan says how many keys and bytes of stored data would go.
    """
    result = svc.lifecycle.remove(
        name, actor=principal.username, dry_run=dry_run, keep_data=keep_data
    )
    if isinstance(result, RemovalPlan):
        # The route's status is 204 (no body): a returned model would be sent as an
        # empty 204, so the plan is answered as an explicit 200.
        return JSONResponse(result.model_dump(mode="json"))
    answer = outcome(svc, result)
    return answer if isinstance(answer, Response) else Response(status_code=204)
