"""RFC 9457 problem responses: the one place where errors become HTTP."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException

from modhub import telemetry
from modhub.errors import ModhubError, TooManyAttempts, Unauthorized

log = logging.getLogger("modhub.api")
MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:modhub:problem:"


class ProblemError(BaseModel):
    """One invalid field."""

    path: str
    code: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


def problem(status: int, title: str, detail: str, kind: str, **extra: Any) -> JSONResponse:
    """Return a problem+json response; its `requestId` is the request's being served
    unless given."""
    body = {"type": TYPE_PREFIX + kind, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    if "requestId" not in body and (served := telemetry.request_id()) is not None:
        body["requestId"] = served
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def _modhub_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModhubError)
    if exc.status >= 500:
        log.error("internal error: %s", exc.detail)
    response = problem(exc.status, exc.title, exc.detail, exc.kind, errors=exc.errors, **exc.extra)
    if isinstance(exc, TooManyAttempts):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        where, *rest = error["loc"] or ("body",)
        if error["type"] == "json_invalid":
            # The location is a character offset, not a field: the whole body is at fault.
            position, rest = rest[0] if rest else "?", []
            reason = (error.get("ctx") or {}).get("error", "not valid JSON")
            error = {**error, "msg": f"JSON decode error at character {position}: {reason}"}
        pointer = "".join(f"/{p}" for p in rest)
        errors.append(
            {
                "path": pointer if where == "body" else f"{where}:{pointer[1:]}",
                "code": error["type"],
                "message": error["msg"],
            }
        )
    return problem(
        422,
        "Invalid input",
        f"{len(errors)} invalid field(s) in the request",
        "invalid-input",
        errors=errors,
    )


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        413: "Payload too large",
    }
    kinds = {
        400: "bad-request",
        404: "not-found",
        405: "method-not-allowed",
        413: "payload-too-large",
    }
    response = problem(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        str(exc.detail),
        kinds.get(exc.status_code, f"http-{exc.status_code}"),
    )
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def _unstorable(_request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value of the request (PostgreSQL: NUL characters, a string
    # longer than its column): the input is at fault, not the server.
    assert isinstance(exc, DataError)
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
    log.warning("the database refused a value of a request: %s", reason)
    return problem(
        422,
        "Invalid input",
        f"a value of the request cannot be stored: {reason}",
        "invalid-input",
    )


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return problem(
        500, "Internal error", "an unexpected error occurred; see the server log", "internal"
    )


def install(app: FastAPI) -> None:
    """Route every error raised in `app` through the problem builders above."""
    app.add_exception_handler(ModhubError, _modhub_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return the OpenAPI description of the problem responses an operation may give."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "model": Problem,
            "description": "A problem (RFC 9457)",
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }
