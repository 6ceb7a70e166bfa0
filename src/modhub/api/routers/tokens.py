"""API tokens: list them and revoke them (creating one is `modhub tokens create`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from modhub.api.deps import ServicesDep, authenticated
from modhub.api.problems import responses
from modhub.auth import ApiTokenInfo, Permission, Principal
from modhub.registry.types import Shape

router = APIRouter(tags=["auth"])
Caller = Annotated[Principal, Depends(authenticated)]


class TokenOut(Shape):
    """An API token as it may be shown: never the token itself nor its hash."""

    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, info: ApiTokenInfo) -> TokenOut:
        return cls.model_validate(info, from_attributes=True)


def _owner(principal: Principal) -> str | None:
    """Return whose tokens the caller may see and revoke: None for every user's."""
    return None if principal.can(Permission.USERS_ADMIN) else principal.username


@router.get("/tokens", responses=responses(401))
def list_tokens(svc: ServicesDep, principal: Caller) -> list[TokenOut]:
    """List API tokens, revoked ones too: an admin sees every user's, anyone else their own.

    `lastUsedAt` is recorded at most once every few minutes per token.
    """
    return [TokenOut.of(info) for info in svc.auth.api_tokens(_owner(principal))]


@router.delete("/tokens/{token_id}", status_code=204, responses=responses(401, 404, 422))
def revoke_token(token_id: int, svc: ServicesDep, principal: Caller) -> Response:
    """Revoke an API token: refused from its next request on. An admin may revoke any
    token, anyone else only their own (another user's token is not found)."""
    svc.auth.revoke_api_token(token_id, actor=principal.username, owner=_owner(principal))
    return Response(status_code=204)
