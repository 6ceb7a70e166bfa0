"""The seed's module endpoints: register, list, read, validate, status, config, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from modhub.api.deps import ServicesDep, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.manifest import validate_manifest
from modhub.registry import Status
from modhub.registry.types import ConfigView, ModuleDetail, ModulePage, Plan, Shape

router = APIRouter(prefix="/modules", tags=["modules"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.MODULES_WRITE))]
Admin = Annotated[Principal, Depends(require(Permission.MODULES_ADMIN))]
Cascade = Annotated[bool, Query(description="Also change dependencies or dependents")]
DryRun = Annotated[bool, Query(alias="dryRun", description="Answer with the plan only")]


class ManifestBody(Shape):
    manifest: dict[str, Any] = Field(description="The module.json document")


class StatusBody(Shape):
    status: Literal["ENABLED", "DISABLED"]


class ConfigBody(Shape):
    config: dict[str, Any]


class ValidationIssue(Shape):
    path: str
    code: str
    message: str


class ValidationOut(Shape):
    valid: bool
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]


@router.get("", responses=responses(401, 403, 422))
def list_modules(
    svc: ServicesDep,
    _principal: Reader,
    status: Status | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModulePage:
    """List modules, filtered by status and a search text, a page at a time."""
    return svc.registry.list_modules(status=status, q=q, limit=limit, offset=offset)


@router.post("", status_code=201, responses=responses(401, 403, 409, 413, 422))
def register(body: ManifestBody, svc: ServicesDep, principal: Admin) -> ModuleDetail:
    """Register a manifest: a new module, or a new available version of a known one."""
    return svc.registry.register(body.manifest, actor=principal.username)


@router.post("/validate", responses=responses(401, 403, 413, 422))
def validate(body: ManifestBody, _principal: Reader) -> ValidationOut:
    """Validate a manifest without registering it."""
    return ValidationOut.model_validate(validate_manifest(body.manifest).public())


@router.get("/{name}", responses=responses(401, 403, 404))
def get_module(name: str, svc: ServicesDep, _principal: Reader) -> ModuleDetail:
    """Return a module with its manifest, config, dependencies, dependents and versions."""
    return svc.registry.get(name)


@router.put("/{name}/status", responses=responses(401, 403, 404, 409, 422))
def set_status(
    name: str,
    body: StatusBody,
    svc: ServicesDep,
    principal: Writer,
    cascade: Cascade = False,
    dry_run: DryRun = False,
) -> ModuleDetail | Plan:
    """Enable or disable a module (a REGISTERED module is installed on the way)."""
    return svc.registry.set_status(
        name, Status(body.status), actor=principal.username, cascade=cascade, dry_run=dry_run
    )


@router.put("/{name}/config", responses=responses(401, 403, 404, 422))
def set_config(name: str, body: ConfigBody, svc: ServicesDep, principal: Writer) -> ConfigView:
    """Replace a module's configuration; secrets sent as ******** keep their value."""
    return ConfigView(config=svc.registry.set_config(name, body.config, actor=principal.username))


@router.delete(
    "/{name}",
    status_code=204,
    response_model=None,
    responses={
        200: {"model": Plan, "description": "The plan, with dryRun"},
        **responses(401, 403, 404, 409),
    },
)
def delete_module(
    name: str, svc: ServicesDep, principal: Admin, dry_run: DryRun = False
) -> Response | Plan:
    """Remove a module and all its versions; refused while others depend on it."""
    plan = svc.registry.delete(name, actor=principal.username, dry_run=dry_run)
    if plan is not None:
        return plan
    return Response(status_code=204)
