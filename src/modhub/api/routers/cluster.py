"""The cluster as operators see it: every node, its heartbeat and what it runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import Field

from modhub.api.deps import ServicesDep, lookup, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.cluster.nodes import NodeView
from modhub.registry.types import Shape

router = APIRouter(prefix="/cluster", tags=["cluster"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]


class NodeOut(Shape):
    id: str
    host: str
    pid: int
    address: str | None = Field(description="Where the node listens, as it was configured")
    modhub_version: str
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None
    status: Literal["up", "gone", "stopped"] = Field(
        description="gone: no heartbeat for 3 of its intervals; stopped: it shut down cleanly"
    )
    modules_materialized: list[str] = Field(description='Versions ready here, "name@version"')
    live_workers: int
    runs_in_flight: int
    last_error: str | None
    is_self: bool = Field(alias="self", description="Whether this is the node answering")


def _out(node: NodeView) -> NodeOut:
    return NodeOut(
        id=node.id,
        host=node.host,
        pid=node.pid,
        address=node.address,
        modhub_version=node.modhub_version,
        started_at=node.started_at,
        last_heartbeat_at=node.last_heartbeat_at,
        stopped_at=node.stopped_at,
        status=node.status,
        modules_materialized=node.modules_materialized,
        live_workers=node.live_workers,
        runs_in_flight=node.runs_in_flight,
        last_error=node.last_error,
        is_self=node.is_self,
    )


@router.get("/nodes", responses=responses(401, 403))
async def list_nodes(svc: ServicesDep, _principal: Reader) -> list[NodeOut]:
    """Return every node of the cluster (nodes gone for 7 days are forgotten), newest first."""
    nodes = await lookup(svc, svc.nodes.nodes)
    return [_out(node) for node in nodes]
