"""Module-to-module calls refused before any worker is asked: depth, time, declarations.
(The calls through real workers are in tests/e2e/test_module_services.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from modhub.errors import CallRefused
from modhub.sandbox.channel import MAX_CALL_DEPTH, CallerContext
from modhub.services import Services

CALLER = {
    "name": "caller",
    "version": "1.0.0",
    "displayName": "Caller",
    "dependencies": {"modules": {"callee": "^1.0.0"}},
}
CALLEE = {"name": "callee", "version": "1.0.0", "displayName": "Callee"}


def refusal(services: Services, **context: object) -> str:
    services.registry.register(CALLEE, actor="test")
    services.registry.register(CALLER, actor="test")
    fields: dict[str, object] = {
        "module": "caller",
        "version": "1.0.0",
        "user": {"username": "ada", "role": "admin", "permissions": ["*"]},
        "job": None,
        "deadline": time.monotonic() + 30,
        **context,
    }
    handle = services.pool.services["modules"]
    args = {"module": fields.pop("target", "callee"), "method": "GET", "path": "/x"}
    with pytest.raises(CallRefused) as refused:
        asyncio.run(handle(CallerContext(**fields), "call", args))  # type: ignore[arg-type]
    return refused.value.detail


def test_a_chain_deeper_than_eight_is_refused(services: Services) -> None:
    assert f"deeper than {MAX_CALL_DEPTH}" in refusal(services, depth=MAX_CALL_DEPTH)


def test_a_call_gets_only_the_time_left(services: Services) -> None:
    assert "no time is left" in refusal(services, deadline=time.monotonic() - 1)


def test_an_undeclared_module_is_refused(services: Services) -> None:
    assert "does not list 'other'" in refusal(services, target="other")


def test_a_target_that_is_not_enabled_is_refused(services: Services) -> None:
    assert "'callee' is not enabled" in refusal(services)
