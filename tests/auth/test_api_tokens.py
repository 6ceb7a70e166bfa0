"""API tokens: listing, revoking, and recording their last use off the request path."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from modhub.auth import AuthService
from modhub.auth.usage import TokenUses
from modhub.db.models import ApiToken, AuditEntry, User
from modhub.errors import NotFound, Unauthorized
from modhub.services import Services
from tests.auth.test_service import add_user, bearer

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def auth(services: Services) -> AuthService:
    return services.auth


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(auth: AuthService) -> Iterator[Clock]:
    """Give `auth` a token-use recorder on a hand-moved clock with a 300 s interval."""
    clock = Clock()
    auth.token_uses = TokenUses(auth.db, interval=300, clock=clock)
    yield clock
    auth.token_uses.close()


def last_used(services: Services, token_id: int) -> datetime | None:
    with services.db.read() as session:
        token = session.get(ApiToken, token_id)
        assert token is not None
        return token.last_used_at


def set_last_used(services: Services, token_id: int, when: datetime | None) -> None:
    with services.db.write() as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=when))


def token_id(auth: AuthService, name: str) -> int:
    [found] = [t.id for t in auth.api_tokens() if t.name == name]
    return found


# -- listing ---------------------------------------------------------------------------------------


def test_tokens_are_listed_without_their_secret(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    add_user(services, "olga", "operator")
    before = datetime.now(UTC)
    first = auth.create_api_token("robot", "ci")
    second = auth.create_api_token("olga", "deploy")
    third = auth.create_api_token("robot", "backup")

    listed = auth.api_tokens()

    assert [(t.user, t.name) for t in listed] == [
        ("robot", "ci"),
        ("olga", "deploy"),
        ("robot", "backup"),
    ]
    assert [t.prefix for t in listed] == [first[:10], second[:10], third[:10]]
    assert [t.id for t in listed] == sorted(t.id for t in listed)
    for info in listed:
        assert before - timedelta(seconds=1) <= info.created_at <= datetime.now(UTC)
        assert info.created_at.tzinfo is not None
        assert info.last_used_at is None
        assert info.revoked is False
        shown = json.dumps(asdict(info), default=str)
        assert all(token not in shown for token in (first, second, third))
        with services.db.read() as session:
            digest = session.get(ApiToken, info.id)
            assert digest is not None
        assert digest.token_hash not in shown
    assert [t.name for t in auth.api_tokens("robot")] == ["ci", "backup"]
    assert [t.name for t in auth.api_tokens("olga")] == ["deploy"]


def test_tokens_of_a_user_without_any(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    add_user(services, "olga", "operator")
    auth.create_api_token("robot")

    assert auth.api_tokens("olga") == []


def test_tokens_of_an_unknown_user_are_not_found(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    auth.create_api_token("robot")

    with pytest.raises(NotFound, match="no user 'Robot'"):
        auth.api_tokens("Robot")  # user names are case-sensitive


# -- revoking --------------------------------------------------------------------------------------


def test_a_revoked_token_is_refused_at_once_and_the_revocation_audited(
    services: Services, auth: AuthService
) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    kept = auth.create_api_token("robot", "other")
    assert auth.authenticate(bearer(token)).username == "robot"
    target = token_id(auth, "ci")

    revoked = auth.revoke_api_token(target, actor="root")

    assert (revoked.id, revoked.user, revoked.name) == (target, "robot", "ci")
    assert revoked.revoked is True
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(token))
    assert auth.authenticate(bearer(kept)).username == "robot"
    assert [(t.name, t.revoked) for t in auth.api_tokens()] == [("ci", True), ("other", False)]
    with services.db.read() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "token.revoke")).one()
    assert (entry.actor, entry.target) == ("root", "robot")
    assert entry.detail == {"id": target, "name": "ci"}
    assert token[:10] not in json.dumps(entry.detail)
    assert token not in json.dumps(entry.detail)


def test_revoking_twice_changes_nothing_more(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    auth.create_api_token("robot", "ci")
    target = token_id(auth, "ci")
    auth.revoke_api_token(target)

    again = auth.revoke_api_token(target)

    assert again.revoked is True
    with services.db.read() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "token.revoke")
        ).all()
    assert len(entries) == 1


@pytest.mark.parametrize("unknown", [0, -1, 999, 2**31, 2**63])
def test_revoking_an_unknown_token_is_not_found(
    services: Services, auth: AuthService, unknown: int
) -> None:
    add_user(services, "robot", "viewer")
    auth.create_api_token("robot", "ci")

    with pytest.raises(NotFound, match=f"no API token {unknown}"):
        auth.revoke_api_token(unknown)

    assert [t.revoked for t in auth.api_tokens()] == [False]


def test_an_owner_revokes_only_their_own_tokens(services: Services, auth: AuthService) -> None:
    add_user(services, "robot", "viewer")
    add_user(services, "olga", "operator")
    robots = auth.create_api_token("robot", "robot's")
    olgas = auth.create_api_token("olga", "olga's")

    with pytest.raises(NotFound):
        auth.revoke_api_token(token_id(auth, "olga's"), actor="robot", owner="robot")
    assert auth.authenticate(bearer(olgas)).username == "olga"

    auth.revoke_api_token(token_id(auth, "robot's"), actor="robot", owner="robot")
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(robots))


# -- last use --------------------------------------------------------------------------------------


def test_a_use_records_last_used_at_off_the_calling_thread(
    services: Services, auth: AuthService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    target = token_id(auth, "ci")
    writers: list[str] = []
    write = services.db.write

    def watched() -> AbstractContextManager[Session]:
        writers.append(threading.current_thread().name)
        return write()

    monkeypatch.setattr(services.db, "write", watched)
    before = datetime.now(UTC)

    assert auth.authenticate(bearer(token)).username == "robot"

    assert threading.current_thread().name not in writers  # the request path never writes
    auth.token_uses.flush(timeout=30)
    assert len(writers) == 1
    assert writers[0].startswith("modhub-token-use")
    used = last_used(services, target)
    assert used is not None
    assert before - timedelta(seconds=1) <= used <= datetime.now(UTC)
    [info] = auth.api_tokens()
    assert info.last_used_at == used


def test_a_second_use_within_the_interval_writes_nothing(
    services: Services, auth: AuthService, clock: Clock
) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    target = token_id(auth, "ci")
    auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)
    assert last_used(services, target) is not None
    set_last_used(services, target, LONG_AGO)  # any write from now on would replace it

    clock.now += 299
    for _ in range(5):
        auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)

    assert last_used(services, target) == LONG_AGO
    clock.now += 1  # the interval has passed: the next use is recorded again
    auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)
    used = last_used(services, target)
    assert used is not None
    assert used > LONG_AGO + timedelta(days=1)


def test_uses_are_noted_per_token(services: Services, auth: AuthService, clock: Clock) -> None:
    add_user(services, "robot", "viewer")
    first = auth.create_api_token("robot", "first")
    second = auth.create_api_token("robot", "second")
    auth.authenticate(bearer(first))
    auth.token_uses.flush(timeout=30)
    assert last_used(services, token_id(auth, "second")) is None

    auth.authenticate(bearer(second))  # within the first one's interval
    auth.token_uses.flush(timeout=30)

    assert last_used(services, token_id(auth, "second")) is not None


def test_access_tokens_and_refused_tokens_record_nothing(
    services: Services, auth: AuthService, clock: Clock
) -> None:
    add_user(services, "robot", "viewer")
    auth.create_api_token("robot", "ci")
    auth.authenticate(bearer(auth.tokens.issue("robot", "viewer")))
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer("mh_" + "A" * 43))
    disabled = auth.create_api_token("robot", "disabled")
    with services.db.write() as session:
        session.execute(update(User).values(active=False))
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer(disabled))

    auth.token_uses.flush(timeout=30)

    assert [t.last_used_at for t in auth.api_tokens()] == [None, None]


def test_a_newer_recorded_use_is_not_moved_back(
    services: Services, auth: AuthService, clock: Clock
) -> None:
    """Another process may have recorded a later use: the newest time stays."""
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    target = token_id(auth, "ci")
    future = datetime.now(UTC) + timedelta(days=1)
    set_last_used(services, target, future)

    auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)

    assert last_used(services, target) == future


class BrokenDatabase:
    """A database whose writes fail, as a locked or unreachable one does."""

    def __init__(self) -> None:
        self.attempts = 0

    def write(self) -> AbstractContextManager[Session]:
        self.attempts += 1
        raise OperationalError("UPDATE api_tokens", {}, Exception("database is locked"))


def test_a_failing_write_is_logged_and_does_not_fail_the_request(
    services: Services,
    auth: AuthService,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    target = token_id(auth, "ci")
    broken = BrokenDatabase()
    monkeypatch.setattr(auth.token_uses, "db", broken)

    with caplog.at_level(logging.WARNING, logger="modhub.auth"):
        assert auth.authenticate(bearer(token)).username == "robot"
        auth.token_uses.flush(timeout=30)

    assert broken.attempts == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"could not record the use of API token {target}"
    ]
    assert token not in caplog.text
    # The failure is not retried on every request: the next attempt waits for the interval.
    auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)
    assert broken.attempts == 1
    monkeypatch.setattr(auth.token_uses, "db", services.db)
    clock.now += 300
    auth.authenticate(bearer(token))
    auth.token_uses.flush(timeout=30)
    assert last_used(services, target) is not None


def test_uses_after_close_are_dropped_quietly(
    services: Services, auth: AuthService, clock: Clock
) -> None:
    add_user(services, "robot", "viewer")
    token = auth.create_api_token("robot", "ci")
    auth.token_uses.close()

    assert auth.authenticate(bearer(token)).username == "robot"

    assert last_used(services, token_id(auth, "ci")) is None
