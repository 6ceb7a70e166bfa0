"""Log in; manage users and roles."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from modhub.api.deps import ServicesDep, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.registry.types import Shape

router = APIRouter(tags=["auth"])
Admin = Annotated[Principal, Depends(require(Permission.USERS_ADMIN))]


class Login(Shape):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class AccessToken(Shape):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class NewUser(Shape):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(max_length=1024)
    role: str = Field(max_length=64)


class UserOut(Shape):
    username: str
    role: str


class RoleOut(Shape):
    name: str
    permissions: list[str]


@router.post("/auth/login", responses=responses(401, 422, 429))
def login(body: Login, svc: ServicesDep) -> AccessToken:
    """Exchange a user name and password for a bearer access token."""
    token = svc.auth.login(body.username, body.password)
    return AccessToken(access_token=token, expires_in=svc.settings.access_token_ttl)


@router.post("/users", status_code=201, responses=responses(401, 403, 409, 422))
def create_user(body: NewUser, svc: ServicesDep, principal: Admin) -> UserOut:
    """Create a user with a role (admin only)."""
    svc.auth.create_user(body.username, body.role, body.password, actor=principal.username)
    return UserOut(username=body.username, role=body.role)


@router.get("/roles", responses=responses(401, 403))
def list_roles(svc: ServicesDep, _principal: Admin) -> list[RoleOut]:
    """List the roles and their permissions."""
    return [RoleOut(name=n, permissions=p) for n, p in svc.auth.roles().items()]


@router.put(
    "/roles/{role}/permissions/{permission}",
    status_code=204,
    responses=responses(401, 403, 404, 409, 422),
)
def grant(role: str, permission: str, svc: ServicesDep, principal: Admin) -> Response:
    """Grant a permission (a platform one, or one a module declares) to a role."""
    svc.auth.grant(role, permission, actor=principal.username)
    return Response(status_code=204)


@router.delete(
    "/roles/{role}/permissions/{permission}",
    status_code=204,
    responses=responses(401, 403, 404, 409, 422),
)
def revoke(role: str, permission: str, svc: ServicesDep, principal: Admin) -> Response:
    """Take a permission away from a role."""
    svc.auth.revoke(role, permission, actor=principal.username)
    return Response(status_code=204)
