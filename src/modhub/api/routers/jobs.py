"""Jobs: a module's schedules, run now, run history, cancel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from modhub.api.deps import ServicesDep, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.jobs import RunPage, RunView

router = APIRouter(tags=["jobs"])
Reader = Annotated[Principal, Depends(require(Permission.MODULES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.MODULES_WRITE))]
RunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
# Bounded so that no number reaches the database beyond what it stores (SQLite: 64 bits).
RunId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/modules/{name}/jobs", responses=responses(401, 403, 404))
def list_jobs(name: str, svc: ServicesDep, _principal: Reader) -> list[dict[str, Any]]:
    """Return a module's jobs with their next fire times (none while it is not enabled)."""
    return svc.jobs.jobs_of(name)


@router.post(
    "/modules/{name}/jobs/{job}/run",
    status_code=202,
    responses=responses(401, 403, 404, 409, 501),
)
def run_job(name: str, job: str, svc: ServicesDep, _principal: Writer) -> RunView:
    """Queue a run of the job now; poll it at /jobs/runs/{id}.

    409 while the module is not ENABLED; 501 when the module has no code to run.
    """
    return svc.jobs.run_now(name, job)


@router.get("/jobs/runs", responses=responses(401, 403, 422))
def list_runs(
    svc: ServicesDep,
    _principal: Reader,
    module: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[str | None, Query(max_length=64)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> RunPage:
    """Return job runs, newest first, filtered by module, job and status."""
    return svc.jobs.store.list(module=module, job=job, status=status, limit=limit, offset=offset)


@router.get("/jobs/runs/{run_id}", responses=responses(401, 403, 404))
def get_run(run_id: RunId, svc: ServicesDep, _principal: Reader) -> RunView:
    """Return one run with its result or error and the tail of its log."""
    return svc.jobs.store.get(run_id)


@router.post("/jobs/runs/{run_id}/cancel", responses=responses(401, 403, 404, 409))
async def cancel_run(run_id: RunId, svc: ServicesDep, _principal: Writer) -> RunView:
    """Cancel a queued or running run."""
    return await svc.jobs.cancel(run_id)
