"""Login lockout timing on the controllable clock (`AuthService.clock`), never the wall
clock: a name is locked from the check that reaches the limit for exactly
`login_lockout_seconds`, and `retry_after` counts down with the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modhub.auth import AuthService
from modhub.errors import TooManyAttempts, Unauthorized
from modhub.services import Services
from tests.conftest import PASSWORD

LOCKOUT = 60
LIMIT = 3


class Clock:
    """The lockout's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def auth(services: Services) -> AuthService:
    services.auth.create_user("alice", "operator", PASSWORD)
    services.settings.login_max_failures = LIMIT
    services.settings.login_lockout_seconds = LOCKOUT
    return services.auth


@pytest.fixture
def clock(auth: AuthService) -> Clock:
    auth.clock = clock = Clock()
    return clock


def fail(auth: AuthService, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Unauthorized):
            auth.login("alice", "wrong password")


def refused_for(auth: AuthService) -> int:
    """Return the retry_after of a refused login with the right password."""
    with pytest.raises(TooManyAttempts) as caught:
        auth.login("alice", PASSWORD)
    return caught.value.retry_after


def test_the_limit_is_exact(auth: AuthService, clock: Clock) -> None:
    fail(auth, LIMIT - 1)
    clock.advance(LOCKOUT * 10)  # failures do not expire by themselves before the limit
    fail(auth, 1)

    assert refused_for(auth) == LOCKOUT + 1


def test_the_lock_lasts_exactly_the_lockout_from_the_limiting_check(
    auth: AuthService, clock: Clock
) -> None:
    fail(auth, LIMIT - 1)
    clock.advance(20)
    fail(auth, 1)  # this check reaches the limit: the lock starts now

    clock.advance(LOCKOUT / 2)
    assert refused_for(auth) == LOCKOUT // 2 + 1
    clock.advance(LOCKOUT / 2 - 0.25)
    assert refused_for(auth) == 1  # a quarter second left (refusals do not extend it)

    clock.advance(0.25)
    assert auth.login("alice", PASSWORD)


def test_after_the_lock_a_wrong_password_counts_from_one(auth: AuthService, clock: Clock) -> None:
    fail(auth, LIMIT)
    clock.advance(LOCKOUT)

    fail(auth, LIMIT - 1)  # not locked again before the limit
    assert auth.login("alice", PASSWORD)
