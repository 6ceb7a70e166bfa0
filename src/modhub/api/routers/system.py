"""Health check, the manifest schema, and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select, text

from modhub.api.deps import ServicesDep, lookup, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.db.models import AuditEntry
from modhub.manifest import manifest_schema
from modhub.registry.types import Shape
from modhub.services import Services

router = APIRouter(tags=["system"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]


class Health(Shape):
    status: str
    database: str


class AuditOut(Shape):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditPage(Shape):
    items: list[AuditOut]
    total: int


@router.get("/schemas/manifest", responses=responses(401, 403))
def get_manifest_schema(_principal: Reader) -> dict[str, Any]:
    """Return the JSON Schema of module.json."""
    return manifest_schema()


@router.get("/audit", responses=responses(401, 403, 422))
def audit_log(
    svc: ServicesDep,
    _principal: Reader,
    target: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AuditPage:
    """Return audit entries, newest first, optionally for one module or user."""
    where = [AuditEntry.target == target] if target else []
    with svc.db.read() as session:
        total = session.scalar(select(func.count(AuditEntry.id)).where(*where)) or 0
        rows = session.scalars(
            select(AuditEntry)
            .where(*where)
            .order_by(AuditEntry.id.desc())
            .limit(limit)
            .offset(offset)
        )
        items = [AuditOut.model_validate(r, from_attributes=True) for r in rows]
    return AuditPage(items=items, total=total)


health_router = APIRouter(tags=["system"])


@health_router.get("/healthz")
async def healthz(svc: ServicesDep) -> Health:
    """Answer whether the server and its database are up (no token needed)."""
    await lookup(svc, _ping, svc)
    return Health(status="ok", database=svc.db.dialect)


def _ping(svc: Services) -> None:
    with svc.db.query() as connection:
        connection.execute(text("SELECT 1"))
