"""Users, logins, API tokens and role grants, on the database."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from modhub.auth.credentials import (
    API_TOKEN_PREFIX,
    AccessTokens,
    hash_api_token,
    hash_password,
    new_api_token,
    verify_password,
)
from modhub.auth.permissions import PERMISSION_FORM, Principal
from modhub.auth.throttle import LoginAttempts
from modhub.auth.usage import TokenUses
from modhub.db import Database
from modhub.db.audit import SYSTEM, record
from modhub.db.models import ApiToken, Role, RolePermission, User, utcnow
from modhub.errors import Conflict, InvalidInput, NotFound, Unauthorized
from modhub.settings import Settings

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 8
_MAX_ID = 2**31 - 1  # an INTEGER primary key on PostgreSQL
_NO_CALLER = "the token's user does not exist or is disabled"

# Every request authenticates, so its two statements are built once (see registry/rows.py):
# one query each for the user, its role and the role's permissions (outer join); an API
# token's also returns the token's id, to note its use.
_PRINCIPAL = select(User.username, User.role, User.active, RolePermission.permission).outerjoin(
    RolePermission, RolePermission.role == User.role
)
_BY_USERNAME = _PRINCIPAL.where(User.username == bindparam("username"))
_BY_API_TOKEN = (
    _PRINCIPAL.add_columns(ApiToken.id.label("token_id"))
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("digest"), ApiToken.revoked.is_(False))
)
# PostgreSQL: the caller in one row, its permissions in an array, for a statement that
# reads more beside it (registry/views.py). Keyed by "is an API token".
_CALLER = select(
    User.username,
    User.role,
    User.active,
    func.array_remove(func.array_agg(RolePermission.permission), None).label("permissions"),
).outerjoin(RolePermission, RolePermission.role == User.role)
CALLER_ROW: dict[bool, Select[Any]] = {
    False: _CALLER.where(User.username == bindparam("username")).group_by(User.id),
    True: _CALLER.add_columns(ApiToken.id.label("token_id"))
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("digest"), ApiToken.revoked.is_(False))
    .group_by(User.id, ApiToken.id),
}


@dataclass(frozen=True)
class Credential:
    """A bearer credential, checked as far as it can be without the database: the
    parameters of the statement that reads its caller (`CALLER_ROW[api_token]`)."""

    api_token: bool
    params: dict[str, str]


@dataclass(frozen=True)
class ApiTokenInfo:
    """What may be shown of an API token: never the token nor its hash."""

    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class AuthService:
    """Everything about who may do what."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.tokens = AccessTokens(settings.resolved_secret_key(), settings.access_token_ttl)
        self.token_uses = TokenUses(db)
        self.attempts = LoginAttempts(db, settings)
        self.clock: Callable[[], datetime] = utcnow  # the lockout's time; tests move it

    def create_user(self, username: str, role: str, password: str, *, actor: str = SYSTEM) -> None:
        """Create a user with `role`; refuse a taken name, an unknown role, a short password."""
        errors = []
        if not USERNAME.fullmatch(username):
            errors.append(
                {
                    "path": "/username",
                    "code": "invalid_username",
                    "message": "use 1-64 letters, digits, '_', '.', '@' or '-'",
                }
            )
        if len(password) < MIN_PASSWORD:
            errors.append(
                {
                    "path": "/password",
                    "code": "too_short",
                    "message": f"a password needs at least {MIN_PASSWORD} characters",
                }
            )
        if errors:
            raise InvalidInput("the user is not valid", errors=errors)
        try:
            with self.db.write() as session:
                if session.get(Role, role) is None:
                    raise InvalidInput(
                        f"unknown role '{role}'",
                        errors=[
                            {
                                "path": "/role",
                                "code": "unknown_role",
                                "message": f"unknown role '{role}'; roles: {self._role_names()}",
                            }
                        ],
                    )
                session.add(
                    User(username=username, role=role, password_hash=hash_password(password))
                )
                record(session, actor, "user.create", username, role=role)
        except IntegrityError:
            raise Conflict(f"user '{username}' already exists") from None

    def ensure_admin(self, password: str | None) -> str | None:
        """Create the `admin` user if there is no user; return its password if generated."""
        with self.db.read() as session:
            if session.scalars(select(User.id).limit(1)).first() is not None:
                return None
        generated = None if password else secrets.token_urlsafe(12)
        try:
            self.create_user("admin", "admin", password or generated or "")
        except Conflict:
            return None
        return generated

    def login(self, username: str, password: str) -> str:
        """Return an access token; lock the name after too many failures.

        The check is reserved before the password is looked at (see `throttle.py`), so
        concurrent logins never check more passwords than the limit. User names are
        case-sensitive, and so is the lock: failures against `Alice` do not lock `alice`.
        """
        self.attempts.reserve(username, self.clock())
        with self.db.read() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
        found = user is not None and user.active
        if verify_password(user.password_hash if user and found else None, password) and user:
            self.attempts.clear(username)
            return self.tokens.issue(user.username, user.role)
        raise Unauthorized("wrong user name or password")

    def authenticate(
        self, authorization: str | None, connection: Connection | None = None
    ) -> Principal:
        """Return the caller named by an `Authorization: Bearer` header value.

        Read on `connection` (one of `db.query()`) when given, for a caller that reads more
        on it, else on one of its own.
        """
        credential = self.credential(authorization)
        statement = _BY_API_TOKEN if credential.api_token else _BY_USERNAME
        with self.db.query() if connection is None else nullcontext(connection) as connection:
            rows = connection.execute(statement, credential.params).all()
        permissions = (row.permission for row in rows if row.permission is not None)
        return self.principal(credential, rows[0] if rows else None, permissions)

    def credential(self, authorization: str | None) -> Credential:
        """Return the credential of an `Authorization: Bearer` header value: an API token's
        hash, or the user name of a valid access token (else Unauthorized)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        token = token.strip()
        if token.startswith(API_TOKEN_PREFIX):
            return Credential(True, {"digest": hash_api_token(token)})
        return Credential(False, {"username": self.tokens.subject(token)})

    def principal(self, credential: Credential, row: Any, permissions: Iterable[str]) -> Principal:
        """Return the caller of `credential` from its row (username, role, active and, for
        an API token, token_id), or raise Unauthorized for no row or a disabled user."""
        if row is None or not row.active:
            raise Unauthorized(_NO_CALLER)
        if credential.api_token:
            self.token_uses.used(row.token_id)  # in memory; written later, off this path
        return Principal(row.username, row.role, frozenset(permissions))

    def create_api_token(self, username: str, name: str = "api", *, actor: str = SYSTEM) -> str:
        """Return a new API token for `username`; only its hash is kept."""
        token, digest = new_api_token()
        with self.db.write() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
            if user is None:
                raise NotFound(f"no user '{username}'")
            session.add(ApiToken(user_id=user.id, name=name, token_hash=digest, prefix=token[:10]))
            record(session, actor, "token.create", username, name=name)
        return token

    def api_tokens(self, username: str | None = None) -> list[ApiTokenInfo]:
        """Return every API token (revoked ones too), or those of `username`, oldest first."""
        query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
        with self.db.read() as session:
            if username is not None:
                known = session.scalars(select(User.id).where(User.username == username)).first()
                if known is None:
                    raise NotFound(f"no user '{username}'")
                query = query.where(ApiToken.user_id == known)
            rows = session.execute(query.order_by(ApiToken.id)).all()
        return [_token_info(token, owner) for token, owner in rows]

    def revoke_api_token(
        self, token_id: int, *, actor: str = SYSTEM, owner: str | None = None
    ) -> ApiTokenInfo:
        """Revoke an API token: it is refused from its next request on.

        With `owner`, only that user's tokens can be revoked: any other is not found, as it
        is in that user's list. Revoking a revoked token changes nothing.
        """
        if not 0 < token_id <= _MAX_ID:  # not an id the database could hold
            raise NotFound(f"no API token {token_id}")
        with self.db.write() as session:
            found = session.execute(
                select(ApiToken, User.username)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
                .with_for_update(of=ApiToken)
            ).first()
            if found is None or (owner is not None and found[1] != owner):
                raise NotFound(f"no API token {token_id}")
            token, username = found
            if not token.revoked:
                token.revoked = True
                # The id and label only: never the token, its hash or its prefix.
                record(session, actor, "token.revoke", username, id=token.id, name=token.name)
            return _token_info(token, username)

    def roles(self) -> dict[str, list[str]]:
        """Return every role with its permissions."""
        with self.db.read() as session:
            out: dict[str, list[str]] = {r: [] for r in session.scalars(select(Role.name))}
            for grant in session.scalars(select(RolePermission)):
                out[grant.role].append(grant.permission)
        return {role: sorted(perms) for role, perms in sorted(out.items())}

    def grant(self, role: str, permission: str, *, actor: str = SYSTEM) -> None:
        """Grant `permission` to `role` (granting twice is harmless)."""
        self._check_grant(role, permission)
        with self.db.write() as session:
            if session.get(Role, role) is None:
                raise NotFound(f"no role '{role}'")
            if session.get(RolePermission, (role, permission)) is None:
                session.add(RolePermission(role=role, permission=permission))
                record(session, actor, "role.grant", role, permission=permission)

    def revoke(self, role: str, permission: str, *, actor: str = SYSTEM) -> None:
        """Take `permission` away from `role`."""
        self._check_grant(role, permission)
        with self.db.write() as session:
            grant = session.get(RolePermission, (role, permission))
            if grant is None:
                raise NotFound(f"role '{role}' does not have '{permission}'")
            session.delete(grant)
            record(session, actor, "role.revoke", role, permission=permission)

    @staticmethod
    def _check_grant(role: str, permission: str) -> None:
        if not PERMISSION_FORM.fullmatch(permission):
            raise InvalidInput(
                f"'{permission}' is not a permission",
                errors=[
                    {
                        "path": "/permission",
                        "code": "invalid_permission",
                        "message": "use the form scope:action, for example vmware:read",
                    }
                ],
            )
        if role == "admin":
            raise Conflict("the admin role always has every permission")

    def _role_names(self) -> str:
        return ", ".join(self.roles())


def _token_info(token: ApiToken, username: str) -> ApiTokenInfo:
    return ApiTokenInfo(
        id=token.id,
        user=username,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked=token.revoked,
    )
