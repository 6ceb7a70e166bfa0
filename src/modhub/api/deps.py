"""Request dependencies: the services, who is calling with which permission, and how a
blocking database read is run from an async endpoint.

Every dependency here is `async`: FastAPI runs a plain `def` dependency in a worker
thread, and each such hand-off costs more than the work of these small functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from modhub import telemetry
from modhub.auth import Principal
from modhub.errors import Forbidden
from modhub.services import Services

P = ParamSpec("P")
T = TypeVar("T")

bearer = HTTPBearer(
    auto_error=False,
    description="An access token from /auth/login or an API token from `modhub tokens create`",
)


async def services(request: Request) -> Services:
    """Return the services of this app."""
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def lookup(svc: Services, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a short blocking database read for an async endpoint.

    On the embedded SQLite database it runs on the event loop: the read is in-process
    CPU work of well under a millisecond that never waits for a writer (WAL), and the
    hand-off to a worker thread would cost about as much again. On a database server it
    runs in a worker thread, so a slow network or server never stalls other requests.
    (The module route dispatcher makes the same choice: `inline_lookups`.)
    """
    if svc.db.embedded:
        return read(*args, **kwargs)
    return await run_in_threadpool(read, *args, **kwargs)


def authorization(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """Return the `Authorization` header value of the bearer credentials, if any."""
    return f"Bearer {credentials.credentials}" if credentials else None


def authorize(
    svc: Services, header: str | None, permission: str, connection: Connection | None = None
) -> Principal:
    """Return the caller of `header` if they hold `permission` (401 or 403 otherwise).

    Blocking (a database read): for an endpoint that runs it in the same worker thread as
    its own read, one hand-off for both (see `Bearer`). The caller is noted in the
    request's log lines (the worker thread shares the request's fields). Read on
    `connection` (one of `db.query()`) when given.
    """
    return admit(svc.auth.authenticate(header, connection), permission)


def admit(principal: Principal, permission: str) -> Principal:
    """Return `principal` if they hold `permission` (else 403), noted as the caller in the
    request's log lines (a worker thread shares the request's fields)."""
    telemetry.note(user=principal.username)
    if not principal.can(permission):
        raise Forbidden(permission)
    return principal


async def _caller(svc: Services, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    principal = await lookup(svc, svc.auth.authenticate, authorization(credentials))
    telemetry.note(user=principal.username)  # in the request's log lines
    return principal


async def authenticated(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Return the caller named by the bearer token (401 without a valid one)."""
    return await _caller(svc, credentials)


# The bearer credentials alone, for an endpoint that checks them itself with `authorize`
# inside its own read (one thread hand-off instead of two): its OpenAPI security is the
# same as with `require`'s dependency.
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency that lets only callers with `permission` through (else 403)."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        # One dependency, not three: each level of FastAPI's dependency solving costs.
        principal = await _caller(request.app.state.services, credentials)
        if not principal.can(permission):
            raise Forbidden(permission)
        return principal

    return check
