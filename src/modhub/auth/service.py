"""Users, logins, API tokens and role grants, on the database."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select
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
from modhub.db import Database
from modhub.db.audit import SYSTEM, record
from modhub.db.models import ApiToken, LoginThrottle, Role, RolePermission, User
from modhub.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from modhub.settings import Settings

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 8

# Every request authenticates, so its two statements are built once (see registry/rows.py):
# one query each for the user, its role and the role's permissions (outer join).
_PRINCIPAL = select(User.username, User.role, User.active, RolePermission.permission).outerjoin(
    RolePermission, RolePermission.role == User.role
)
_BY_USERNAME = _PRINCIPAL.where(User.username == bindparam("username"))
_BY_API_TOKEN = _PRINCIPAL.join(ApiToken, ApiToken.user_id == User.id).where(
    ApiToken.token_hash == bindparam("digest"), ApiToken.revoked.is_(False)
)


class AuthService:
    """Everything about who may do what."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.tokens = AccessTokens(settings.resolved_secret_key(), settings.access_token_ttl)

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
        """Return an access token; count failures and lock the name after too many."""
        now = datetime.now(UTC)
        with self.db.read() as session:
            throttle = session.get(LoginThrottle, username.lower())
            if throttle and throttle.locked_until and throttle.locked_until > now:
                raise TooManyAttempts(int((throttle.locked_until - now).total_seconds()) + 1)
            user = session.scalars(select(User).where(User.username == username)).first()
        found = user is not None and user.active
        if verify_password(user.password_hash if user and found else None, password) and user:
            with self.db.write() as session:
                row = session.get(LoginThrottle, username.lower())
                if row is not None:
                    session.delete(row)
            return self.tokens.issue(user.username, user.role)
        self._count_failure(username.lower(), now)
        raise Unauthorized("wrong user name or password")

    def _count_failure(self, key: str, now: datetime) -> None:
        # The row is locked so that concurrent failures are all counted (PostgreSQL), and a
        # concurrent first failure that inserted the row first makes this one count again.
        for attempt in range(3):
            try:
                with self.db.write() as session:
                    row = session.get(LoginThrottle, key, with_for_update=True)
                    if row is None:
                        row = LoginThrottle(username=key, failures=0)
                        session.add(row)
                    row.failures += 1
                    if row.failures >= self.settings.login_max_failures:
                        row.failures = 0
                        row.locked_until = now + timedelta(
                            seconds=self.settings.login_lockout_seconds
                        )
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller named by an `Authorization: Bearer` header value."""
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        credential = credential.strip()
        with self.db.query() as connection:
            if credential.startswith(API_TOKEN_PREFIX):
                found = connection.execute(_BY_API_TOKEN, {"digest": hash_api_token(credential)})
            else:
                username = self.tokens.subject(credential)
                found = connection.execute(_BY_USERNAME, {"username": username})
            rows = found.all()
        if not rows or not rows[0].active:
            raise Unauthorized("the token's user does not exist or is disabled")
        permissions = frozenset(row.permission for row in rows if row.permission is not None)
        return Principal(rows[0].username, rows[0].role, permissions)

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
