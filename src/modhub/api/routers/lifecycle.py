"""Bundles, upgrade, rollback, file verification and operations."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, UploadFile
from pydantic import Field

from modhub.api.deps import ServicesDep, require
from modhub.api.operations import ACCEPTED, outcome
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.errors import InvalidInput
from modhub.lifecycle import OperationView
from modhub.registry.types import ModuleDetail, Shape, UpgradePlan
from modhub.sandbox.output import OutputLimits

router = APIRouter(tags=["lifecycle"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]
Admin = Annotated[Principal, Depends(require(Permission.MODULES_ADMIN))]
SUFFIXES = (".zip", ".tar.gz", ".tgz")
DryRun = Annotated[bool, Query(alias="dryRun", description="Answer with the plan only")]


class UpgradeBody(Shape):
    version: str


class FileChange(Shape):
    path: str
    change: str


class Verification(Shape):
    intact: bool
    changes: list[FileChange]


@router.post("/modules/bundles", status_code=201, responses=responses(401, 403, 409, 413, 422))
def upload_bundle(file: UploadFile, svc: ServicesDep, principal: Admin) -> ModuleDetail:
    """Register a module bundle (.zip or .tar.gz of a folder with module.json and its code)."""
    name = file.filename or ""
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise InvalidInput(
            "a bundle must be a .zip, .tar.gz or .tgz file",
            errors=[
                {
                    "path": "/file",
                    "code": "unsupported_format",
                    "message": f"'{name}' is not a .zip, .tar.gz or .tgz file",
                }
            ],
        )
    with tempfile.TemporaryDirectory(dir=svc.settings.data_dir) as tmp:
        upload = Path(tmp) / f"bundle{suffix}"
        with upload.open("wb") as out:
            shutil.copyfileobj(file.file, out)
        return svc.lifecycle.add_bundle(upload, actor=principal.username)


@router.post(
    "/modules/{name}/upgrade", responses={202: ACCEPTED, **responses(401, 403, 404, 409, 422)}
)
def upgrade(
    name: str,
    body: UpgradeBody,
    svc: ServicesDep,
    principal: Admin,
    dry_run: DryRun = False,
) -> ModuleDetail | UpgradePlan:
    """Switch a module to another registered version, keeping the old one on failure.

    With `?dryRun=true`, answer what the upgrade would do to the config and change nothing.
    """
    if dry_run:
        return svc.registry.upgrade_plan(name, body.version)
    result: ModuleDetail = outcome(
        svc, svc.lifecycle.upgrade(name, body.version, actor=principal.username)
    )
    return result


@router.post(
    "/modules/{name}/rollback", responses={202: ACCEPTED, **responses(401, 403, 404, 409, 422)}
)
def rollback(name: str, svc: ServicesDep, principal: Admin) -> ModuleDetail:
    """Return a module to the version it had before its last upgrade."""
    result: ModuleDetail = outcome(svc, svc.lifecycle.rollback(name, actor=principal.username))
    return result


@router.get("/modules/{name}/verify", responses=responses(401, 403, 404))
def verify(name: str, svc: ServicesDep, _principal: Reader) -> Verification:
    """Compare the module's files with the sha256 recorded at install."""
    changes = [FileChange.model_validate(c) for c in svc.lifecycle.verify(name)]
    return Verification(intact=not changes, changes=changes)


class LogLineSource(Shape):
    node: str = Field(description="The id of the node whose worker wrote it (the node list's)")
    stream: str = Field(description='"stderr": the worker\'s output; "modhub": modhub\'s note')
    time: datetime
    request_id: str | None = Field(description="The call it belongs to, when known")


class ModuleLog(Shape):
    lines: list[str]
    entries: list[LogLineSource] = Field(description="Where each of `lines` came from, in order")


LogLimit = Annotated[
    int,
    Query(ge=1, le=OutputLimits.max_log_lines, description="How many of the last lines to return"),
]


@router.get("/modules/{name}/logs", responses=responses(401, 403, 404, 422))
def module_logs(
    name: str, svc: ServicesDep, _principal: Reader, limit: LogLimit = 200
) -> ModuleLog:
    """Return the tail of the module's worker log (handler tracebacks, print output), from
    every node of the cluster, oldest first.

    Lines are cut at 16 KiB; the answer holds at most 1 MiB of them."""
    svc.registry.get(name)  # 404 for an unknown module
    kept = svc.module_logs.tail(name, limit, OutputLimits.max_log_bytes)
    return ModuleLog(
        lines=[e.line for e in kept],
        entries=[
            LogLineSource(node=e.node, stream=e.stream, time=e.at, request_id=e.request_id)
            for e in kept
        ],
    )


@router.get("/operations/{op_id}", responses=responses(401, 403, 404))
def get_operation(op_id: str, svc: ServicesDep, _principal: Reader) -> OperationView:
    """Return a lifecycle operation with its steps and the tail of its log."""
    return svc.operations.get(op_id)
