"""Request dependencies: the services, and who is calling with which permission."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modhub.auth import Principal
from modhub.errors import Forbidden
from modhub.services import Services

bearer = HTTPBearer(
    auto_error=False,
    description="An access token from /auth/login or an API token from `modhub tokens create`",
)


def services(request: Request) -> Services:
    """Return the services of this app."""
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def authenticated(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Return the caller named by the bearer token (401 without a valid one)."""
    header = f"Bearer {credentials.credentials}" if credentials else None
    return svc.auth.authenticate(header)


def require(permission: str) -> Callable[..., Principal]:
    """Return a dependency that lets only callers with `permission` through (else 403)."""

    def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not principal.can(permission):
            raise Forbidden(permission)
        return principal

    return check
