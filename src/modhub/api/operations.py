"""Answering lifecycle work: the result when it finished in time, else 202 and the operation."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from modhub.services import Services

ACCEPTED: dict[str, Any] = {
    "description": "Still running: poll the operation at the Location header",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OperationView"}}},
}


def outcome(svc: Services, result: tuple[bool, Any, str]) -> Any:
    """Return the finished result, or a 202 response with the running operation."""
    done, value, op_id = result
    if done:
        return value
    view = svc.operations.get(op_id)
    return JSONResponse(
        view.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/api/v1/operations/{op_id}"},
    )
