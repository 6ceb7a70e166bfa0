"""Users, logins, lockout, access tokens, API tokens and role grants."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import select, update

from modhub.auth import AuthService, Principal
from modhub.auth import service as service_module
from modhub.auth.credentials import AccessTokens, hash_password, verify_password
from modhub.db import Database
from modhub.db.models import ApiToken, AuditEntry, LoginThrottle, User
from modhub.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from modhub.keys import derive_key
from modhub.services import Services
from tests.conftest import PASSWORD, SECRET


@pytest.fixture
def auth(services: Services) -> AuthService:
    return services.auth


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


def add_user(services: Services, username: str, role: str) -> None:
    """Insert a user with PASSWORD directly (argon2 is slow; hash once for the module)."""
    with services.db.write() as session:
        session.add(User(username=username, role=role, password_hash=password_hash()))


def user_row(services: Services, username: str) -> User:
    with services.db.read() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
    return user


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(username: str = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": username, "role": "operator", "iat": now, "exp": now + 600, "typ": "access"}
    return {**base, **extra}


# -- users ---------------------------------------------------------------------------------------


def test_create_user_stores_an_argon2_hash(services: Services, auth: AuthService) -> None:
    auth.create_user("alice", "operator", PASSWORD, actor="root")

    user = user_row(services, "alice")
    assert user.role == "operator"
    assert user.active is True
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert verify_password(user.password_hash, PASSWORD)
    assert not verify_password(user.password_hash, PASSWORD + "!")
    with services.db.read() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "user.create")).one()
    assert (entry.actor, entry.target, entry.detail) == ("root", "alice", {"role": "operator"})
    assert PASSWORD not in json.dumps(entry.detail)


def test_two_users_with_one_password_get_different_hashes(
    services: Services, auth: AuthService
) -> None:
    auth.create_user("alice", "viewer", PASSWORD)
    auth.create_user("bob", "viewer", PASSWORD)

    assert user_row(services, "alice").password_hash != user_row(services, "bob").password_hash


def test_a_taken_name_is_a_conflict(services: Services, auth: AuthService) -> None:
    auth.create_user("alice", "operator", PASSWORD)

    with pytest.raises(Conflict) as caught:
        auth.create_user("alice", "viewer", "another password")

    assert "alice" in caught.value.detail
    assert user_row(services, "alice").role == "operator"


@pytest.mark.parametrize(
    ("username", "role", "password", "paths"),
    [
        ("alice", "superuser", PASSWORD, ["/role"]),
        ("alice", "viewer", "short", ["/password"]),
        ("bad name", "viewer", PASSWORD, ["/username"]),
        ("", "viewer", PASSWORD, ["/username"]),
        ("x" * 65, "viewer", PASSWORD, ["/username"]),
        ("bad/name", "viewer", "", ["/username", "/password"]),
    ],
)
def test_an_invalid_user_is_refused(
    services: Services,
    auth: AuthService,
    username: str,
    role: str,
    password: str,
    paths: list[str],
) -> None:
    with pytest.raises(InvalidInput) as caught:
        auth.create_user(username, role, password)

    assert [e["path"] for e in caught.value.errors or []] == paths
    with services.db.read() as session:
        assert session.scalars(select(User)).all() == []


def test_unknown_role_names_the_roles(auth: AuthService) -> None:
    with pytest.raises(InvalidInput) as caught:
        auth.create_user("alice", "superuser", PASSWORD)

    [error] = caught.value.errors or []
    for role in ("admin", "operator", "viewer"):
        assert role in error["message"]


# -- logins and access tokens ----------------------------------------------------------------------


def test_login_returns_a_jwt_that_authenticates(services: Services, auth: AuthService) -> None:
    auth.create_user("alice", "operator", PASSWORD)

    token = auth.login("alice", PASSWORD)

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["sub"] == "alice"
    assert body["exp"] - body["iat"] == services.settings.access_token_ttl
    principal = auth.authenticate(bearer(token))
    assert principal == Principal("alice", "operator", frozenset({"modules:read", "modules:write"}))
    assert auth.authenticate(f"bearer   {token}  ").username == "alice"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password"), ("alice", ""), ("nobody", PASSWORD), ("ALICE", PASSWORD)],
)
def test_wrong_credentials_are_unauthorized(
    services: Services, auth: AuthService, username: str, password: str
) -> None:
    add_user(services, "alice", "operator")

    with pytest.raises(Unauthorized) as caught:
        auth.login(username, password)

    assert caught.value.detail == "wrong user name or password"


def test_a_disabled_user_cannot_log_in_or_use_a_token(
    services: Services, auth: AuthService
) -> None:
    add_user(services, "alice", "operator")
    token = auth.login("alice", PASSWORD)
    api_token = auth.create_api_token("alice")
    with services.db.write() as session:
        session.execute(update(User).where(User.username == "alice").values(active=False))

    with pytest.raises(Unauthorized):
        auth.login("alice", PASSWORD)
    for credential in (token, api_token):
        with pytest.raises(Unauthorized):
            auth.authenticate(bearer(credential))


def fail(auth: AuthService, username: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Unauthorized):
            auth.login(username, "wrong password")


def test_too_many_failures_lock_the_name(services: Services, auth: AuthService) -> None:
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 3
    limit = services.settings.login_max_failures
    fail(auth, "alice", limit)

    with pytest.raises(TooManyAttempts) as caught:
        auth.login("alice", PASSWORD)

    assert 0 < caught.value.retry_after <= services.settings.login_lockout_seconds + 1


def test_the_lock_is_keyed_by_the_exact_user_name(services: Services, auth: AuthService) -> None:
    """User names are case-sensitive: `Alice` is not `alice`, and neither is their lock."""
    add_user(services, "alice", "operator")
    add_user(services, "Alice", "viewer")
    services.settings.login_max_failures = 3
    fail(auth, "Alice", 3)
    with pytest.raises(TooManyAttempts):
        auth.login("Alice", PASSWORD)

    assert auth.authenticate(bearer(auth.login("alice", PASSWORD))).role == "operator"
    fail(auth, "ALICE", 2)  # counted for `ALICE` alone: `alice` is still not locked
    assert auth.login("alice", PASSWORD)
    with services.db.read() as session:
        keys = {row.username: row.failures for row in session.scalars(select(LoginThrottle))}
    assert set(keys) == {"Alice", "ALICE"}
    assert keys["ALICE"] == 2
    with pytest.raises(TooManyAttempts):
        auth.login("Alice", PASSWORD)


def test_fewer_failures_than_the_limit_do_not_lock(services: Services, auth: AuthService) -> None:
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 3
    limit = services.settings.login_max_failures
    fail(auth, "alice", limit - 1)

    assert auth.login("alice", PASSWORD)

    fail(auth, "alice", limit - 1)  # a success starts the count again
    assert auth.login("alice", PASSWORD)


def test_the_lock_ends_after_the_lockout(services: Services, auth: AuthService) -> None:
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 2
    fail(auth, "alice", 2)
    with pytest.raises(TooManyAttempts):
        auth.login("alice", PASSWORD)

    with services.db.write() as session:
        row = session.get(LoginThrottle, "alice")
        assert row is not None
        assert row.locked_until is not None
        assert row.locked_until > datetime.now(UTC)
        row.locked_until = datetime.now(UTC) - timedelta(seconds=1)

    assert auth.authenticate(bearer(auth.login("alice", PASSWORD))).username == "alice"
    with services.db.read() as session:
        assert session.get(LoginThrottle, "alice") is None


class Clock:
    """The lockout's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(auth: AuthService) -> Clock:
    auth.clock = clock = Clock()
    return clock


def test_a_lockout_ends_by_itself(services: Services, auth: AuthService, clock: Clock) -> None:
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 1
    services.settings.login_lockout_seconds = 30
    fail(auth, "alice", 1)
    clock.advance(29.5)
    with pytest.raises(TooManyAttempts) as caught:
        auth.login("alice", PASSWORD)
    assert caught.value.retry_after == 1

    clock.advance(0.5)

    assert auth.login("alice", PASSWORD)


def test_after_a_lockout_the_limit_counts_again(
    services: Services, auth: AuthService, clock: Clock
) -> None:
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 2
    fail(auth, "alice", 2)
    clock.advance(services.settings.login_lockout_seconds)
    fail(auth, "alice", 2)  # a new window: two more checks, not one
    with pytest.raises(TooManyAttempts):
        auth.login("alice", PASSWORD)


@pytest.mark.parametrize("processes", [1, 2])
def test_concurrent_logins_check_at_most_the_limit_of_passwords(
    services: Services,
    auth: AuthService,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    processes: int,
) -> None:
    """40 logins at once, 39 wrong and 1 right, limit 5: at most 5 passwords are checked
    up to the right one, and at most 5 more after it (a success clears the name); every other
    login is 429 without its password looked at. With 2 services on one
    database (two API processes), the limit is shared."""
    add_user(services, "alice", "operator")
    services.settings.login_max_failures = 5
    checked: list[str] = []
    lock = threading.Lock()
    real_verify = service_module.verify_password

    def counting_verify(password_hash: str | None, password: str) -> bool:
        with lock:
            checked.append(password)
        return real_verify(password_hash, password)

    monkeypatch.setattr(service_module, "verify_password", counting_verify)
    others = [AuthService(Database(services.settings.db_url), services.settings)]
    auths = [auth, *others][:processes]
    for other in auths:
        other.clock = clock
    passwords = ["wrong password"] * 39 + [PASSWORD]
    barrier = threading.Barrier(len(passwords))

    def attempt(index: int) -> int:
        barrier.wait()
        try:
            auths[index % len(auths)].login("alice", passwords[index])
        except TooManyAttempts:
            return 429
        except Unauthorized:
            return 401
        return 200

    try:
        with ThreadPoolExecutor(len(passwords)) as pool:
            outcomes = list(pool.map(attempt, range(len(passwords))))
    finally:
        for other in others:
            other.db.dispose()

    # A right password clears the name (`LoginAttempts.clear`), and with it the checks
    # counted so far: it is among the first 5 checked, and wrong ones reserved after that
    # success get a new window of 5.
    if PASSWORD in checked:
        assert checked.index(PASSWORD) < 5
        assert len(checked) <= 10
    else:
        assert 1 <= len(checked) <= 5
    assert outcomes.count(401) + outcomes.count(200) == len(checked)
    assert outcomes.count(429) == len(passwords) - len(checked)
    assert outcomes.count(200) == checked.count(PASSWORD)
    if PASSWORD not in checked:  # the right one came too late: the name is locked
        with pytest.raises(TooManyAttempts):
            auth.login("alice", PASSWORD)
        clock.advance(services.settings.login_lockout_seconds)
        assert auth.login("alice", PASSWORD)


def test_an_unknown_name_is_locked_too(services: Services, auth: AuthService) -> None:
    services.settings.login_max_failures = 3
    fail(auth, "nobody", services.settings.login_max_failures)

    with pytest.raises(TooManyAttempts):
        auth.login("nobody", PASSWORD)


def test_concurrent_failed_logins_are_all_refused_cleanly(
    services: Services, auth: AuthService
) -> None:
    """Failed logins racing on one fresh name: no database error escapes, all are counted."""
    services.settings.login_max_failures = 1000
    threads = 10
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            auth.login("victim", "wrong password")
        except Unauthorized:
            return "refused"
        return "accepted"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(attempt, range(threads)))

    assert outcomes == ["refused"] * threads
    with services.db.read() as session:
        row = session.get(LoginThrottle, "victim")
        assert row is not None
        assert row.failures == threads


# -- forged, expired and broken tokens -------------------------------------------------------------


def forged_tokens() -> dict[str, Callable[[], str]]:
    key = derive_key(SECRET, "modhub access token")
    return {
        "expired": lambda: AccessTokens(SECRET, -120).issue("alice", "operator"),
        "alg none": lambda: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "alg none, signed": lambda: _with_header(
            jwt.encode(claims(), key, algorithm="HS256"), {"alg": "none", "typ": "JWT"}
        ),
        "alg HS512 header on an HS256 signature": lambda: _with_header(
            jwt.encode(claims(), key, algorithm="HS256"), {"alg": "HS512", "typ": "JWT"}
        ),
        "another key": lambda: AccessTokens("another-secret-that-is-long-enough-012345", 600).issue(
            "alice", "operator"
        ),
        "the raw secret": lambda: jwt.encode(claims(), SECRET, algorithm="HS256"),
        "HS512": lambda: jwt.encode(claims(), key, algorithm="HS512"),
        "not an access token": lambda: jwt.encode(claims(typ="refresh"), key, "HS256"),
        "no expiry": lambda: jwt.encode(
            {k: v for k, v in claims().items() if k != "exp"}, key, "HS256"
        ),
        "unknown user": lambda: AccessTokens(SECRET, 600).issue("mallory", "admin"),
        "tampered": lambda: _tamper(AccessTokens(SECRET, 600).issue("alice", "operator")),
        "garbage": lambda: "garbage",
        "three dots": lambda: "a.b.c",
        "unknown api token": lambda: "mh_" + "A" * 43,
    }


def _with_header(token: str, header: dict[str, str]) -> str:
    _, payload, signature = token.split(".")
    return f"{b64(header)}.{payload}.{signature}"


def _tamper(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64({**claims('bob'), 'role': 'admin'})}.{signature}"


@pytest.mark.parametrize("kind", sorted(forged_tokens()))
def test_a_bad_token_is_unauthorized(services: Services, auth: AuthService, kind: str) -> None:
    add_user(services, "alice", "operator")
    add_user(services, "bob", "viewer")
    assert auth.authenticate(bearer(AccessTokens(SECRET, 600).issue("bob", "viewer")))
    token = forged_tokens()[kind]()

    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(bearer(token))

    if kind == "expired":
        assert "expired" in caught.value.detail


def test_a_token_that_was_accepted_is_refused_once_it_expires(
    services: Services, auth: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Verified tokens are remembered; the expiry must still be checked on every use.
    add_user(services, "alice", "operator")
    token = auth.tokens.issue("alice", "operator")
    assert auth.authenticate(bearer(token)).username == "alice"
    later = time.time() + services.settings.access_token_ttl + 1
    monkeypatch.setattr("modhub.auth.credentials.time.time", lambda: later)

    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate(bearer(token))


def test_a_remembered_token_still_needs_an_active_user(
    services: Services, auth: AuthService
) -> None:
    add_user(services, "alice", "operator")
    token = auth.tokens.issue("alice", "operator")
    assert auth.authenticate(bearer(token)).role == "operator"
    with services.db.write() as session:
        session.execute(update(User).where(User.username == "alice").values(role="viewer"))
    assert auth.authenticate(bearer(token)).role == "viewer"
    with services.db.write() as session:
        session.execute(update(User).where(User.username == "alice").values(active=False))

    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(token))


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer   ", "Basic YWxpY2U6eA==", "Token x"]
)
def test_a_missing_or_malformed_header_is_unauthorized(
    auth: AuthService, header: str | None
) -> None:
    with pytest.raises(Unauthorized):
        auth.authenticate(header)


# -- API tokens ------------------------------------------------------------------------------------


def test_api_tokens_authenticate_and_are_stored_hashed(
    services: Services, auth: AuthService
) -> None:
    add_user(services, "robot", "viewer")

    token = auth.create_api_token("robot", "ci", actor="root")

    assert token.startswith("mh_")
    assert len(token) > 40
    assert auth.authenticate(bearer(token)) == Principal(
        "robot", "viewer", frozenset({"modules:read"})
    )
    with services.db.read() as session:
        row = session.scalars(select(ApiToken)).one()
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "token.create")).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.name == "ci"
    stored = [str(getattr(row, c)) for c in ("token_hash", "prefix", "name")]
    assert all(token not in value for value in stored)
    assert len(row.prefix) < len(token) // 2
    assert (entry.actor, entry.target) == ("root", "robot")
    assert token not in json.dumps(entry.detail)


def test_api_tokens_are_unique(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")

    assert auth.create_api_token("robot") != auth.create_api_token("robot")


def test_a_revoked_api_token_is_unauthorized(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot")
    with services.db.write() as session:
        session.execute(update(ApiToken).values(revoked=True))

    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(token))


def test_an_api_token_for_an_unknown_user_is_not_found(auth: AuthService) -> None:
    with pytest.raises(NotFound):
        auth.create_api_token("ghost")


# -- roles and grants ------------------------------------------------------------------------------


def test_builtin_roles(auth: AuthService) -> None:
    assert auth.roles() == {
        "admin": ["*"],
        "metrics": ["metrics:read"],
        "operator": ["modules:read", "modules:write"],
        "viewer": ["modules:read"],
    }


def test_grant_and_revoke_a_module_permission(services: Services, auth: AuthService) -> None:
    add_user(services, "olga", "operator")
    add_user(services, "vera", "viewer")
    olga, vera = auth.create_api_token("olga"), auth.create_api_token("vera")
    assert not auth.authenticate(bearer(olga)).can("vmware:read")

    auth.grant("operator", "vmware:read", actor="root")
    auth.grant("operator", "vmware:read")  # twice is harmless

    assert auth.authenticate(bearer(olga)).can("vmware:read")
    assert not auth.authenticate(bearer(olga)).can("vmware:write")
    assert not auth.authenticate(bearer(vera)).can("vmware:read")
    assert "vmware:read" in auth.roles()["operator"]

    auth.revoke("operator", "vmware:read", actor="root")

    assert not auth.authenticate(bearer(olga)).can("vmware:read")
    assert auth.authenticate(bearer(olga)).can("modules:write")
    with services.db.read() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action.in_(["role.grant", "role.revoke"]))
        ).all()
    assert [(e.actor, e.action, e.target, e.detail) for e in entries] == [
        ("root", "role.grant", "operator", {"permission": "vmware:read"}),
        ("root", "role.revoke", "operator", {"permission": "vmware:read"}),
    ]


def test_revoking_what_was_not_granted_is_not_found(auth: AuthService) -> None:
    with pytest.raises(NotFound):
        auth.revoke("viewer", "vmware:read")


def test_granting_to_an_unknown_role_is_not_found(auth: AuthService) -> None:
    with pytest.raises(NotFound):
        auth.grant("auditor", "vmware:read")


@pytest.mark.parametrize(
    "permission", ["vmware", "VMware:read", "vmware read", ":read", "vmware:", "a:b:c", ""]
)
def test_an_invalid_permission_is_refused(auth: AuthService, permission: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        auth.grant("operator", permission)

    assert [e["path"] for e in caught.value.errors or []] == ["/permission"]
    assert auth.roles()["operator"] == ["modules:read", "modules:write"]


def test_the_admin_role_cannot_be_changed(auth: AuthService) -> None:
    with pytest.raises(Conflict):
        auth.grant("admin", "vmware:read")
    with pytest.raises(Conflict):
        auth.revoke("admin", "*")

    assert auth.roles()["admin"] == ["*"]


def test_principal_can() -> None:
    admin = Principal("root", "admin", frozenset({"*"}))
    scoped = Principal("olga", "operator", frozenset({"vmware:*", "modules:read"}))
    plain = Principal("vera", "viewer", frozenset({"modules:read"}))

    assert admin.can("modules:write")
    assert admin.can("anything:at-all")
    assert scoped.can("vmware:read")
    assert scoped.can("vmware:delete")
    assert scoped.can("modules:read")
    assert not scoped.can("modules:write")
    assert not scoped.can("vmwarex:read")
    assert plain.can("modules:read")
    assert not plain.can("modules:write")
    assert not plain.can("modules:*")
    assert not Principal("nobody", "none", frozenset()).can("modules:read")


def test_a_scope_wildcard_granted_to_a_role(services: Services, auth: AuthService) -> None:
    add_user(services, "olga", "operator")

    auth.grant("operator", "vmware:*")

    principal = auth.authenticate(bearer(auth.login("olga", PASSWORD)))
    assert principal.can("vmware:read")
    assert principal.can("vmware:write")
    assert not principal.can("users:admin")


# -- the first admin -------------------------------------------------------------------------------


def test_ensure_admin_generates_a_password_once(services: Services, auth: AuthService) -> None:
    generated = auth.ensure_admin(None)

    assert generated is not None
    assert len(generated) >= 12
    assert user_row(services, "admin").role == "admin"
    assert auth.authenticate(bearer(auth.login("admin", generated))).can("users:admin")
    assert auth.ensure_admin(None) is None
    assert auth.ensure_admin("another password") is None
    assert auth.login("admin", generated)


def test_ensure_admin_with_a_password_returns_nothing(auth: AuthService) -> None:
    assert auth.ensure_admin(PASSWORD) is None

    assert auth.login("admin", PASSWORD)
    assert auth.ensure_admin(None) is None


def test_ensure_admin_leaves_existing_users_alone(services: Services, auth: AuthService) -> None:
    add_user(services, "alice", "admin")

    assert auth.ensure_admin(None) is None

    with services.db.read() as session:
        assert session.scalars(select(User.username)).all() == ["alice"]
