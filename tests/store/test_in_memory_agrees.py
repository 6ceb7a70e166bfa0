"""`Store.in_memory()` (for module authors' tests) follows the platform store's rules: the
same calls give the same answers and the same errors as the real store behind a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from modhub.errors import ModhubError
from modhub.sandbox.channel import CallerContext
from modhub.sdk import Store
from modhub.sdk import services as sdk
from modhub.store import ModuleStore
from modhub.store.channel import StoreService

CALLER = CallerContext(module="mine", version="1.0.0", user=None, job="j", deadline=0.0)
Step = Callable[[Store], Any]


def platform(store: ModuleStore) -> Store:
    """A Store whose calls reach the real store service, errors re-raised by name as the
    worker does."""
    service = StoreService(store, lambda module, version: 64 * 1024 * 1024)

    def call(name: str, op: str, args: dict[str, Any]) -> Any:
        try:
            return asyncio.run(service.handle(CALLER, op, args))
        except ModhubError as exc:
            raise sdk.ERRORS.get(type(exc).__name__, sdk.ServiceError)(exc.detail) from None

    async def acall(name: str, op: str, args: dict[str, Any]) -> Any:
        return call(name, op, args)

    return Store(call, acall)


def outcome(store: Store, step: Step) -> Any:
    try:
        result = step(store)
    except sdk.ServiceError as exc:
        return type(exc).__name__
    if isinstance(result, sdk.Entry):
        return (result.key, result.value, result.version, result.expires_at is None)
    if isinstance(result, sdk.Page):
        return [entry.key for entry in result.items], result.cursor is None
    return result


SCRIPTS: dict[str, list[Step]] = {
    "versions and if_version": [
        lambda s: s.set("a", 1),
        lambda s: s.set("a", 2),
        lambda s: s.set("a", 3, if_version=1),
        lambda s: s.set("b", 1, if_version=0),
        lambda s: s.set("b", 2, if_version=0),
        lambda s: s.delete("a", if_version=5),
        lambda s: s.delete("a", if_version=2),
        lambda s: s.delete("a"),
        lambda s: s.get_entry("b"),
    ],
    "incr": [
        lambda s: s.incr("n"),
        lambda s: s.incr("n", 41),
        lambda s: s.set("flag", True),
        lambda s: s.incr("flag"),
        lambda s: s.set("text", "x"),
        lambda s: s.incr("text"),
        lambda s: s.set("t", 5, ttl=60),
        lambda s: s.incr("t"),
        lambda s: s.get_entry("t"),  # incr kept the ttl
    ],
    "ttl checks": [
        lambda s: s.set("a", 1, ttl=0),
        lambda s: s.set("a", 1, ttl=-1),
        lambda s: s.set("a", 1, ttl=101 * 365 * 24 * 3600),
        lambda s: s.set("a", 1, ttl=True),  # type: ignore[arg-type]
        lambda s: s.get_entry("a"),
    ],
    "keys and values": [
        lambda s: s.set("", 1),
        lambda s: s.set("k" * 513, 1),
        lambda s: s.set("é" * 256, 1),  # 512 bytes: allowed
        lambda s: s.set("big", "é" * 500_000),  # 1,000,002 bytes as UTF-8 JSON: allowed
        lambda s: s.set("bigger", "x" * (1 << 20)),
        lambda s: s.set("nan", float("nan")),
    ],
    "list in key order": [
        lambda s: [s.set(key, 1) for key in ("b2", "a", "b1", "b10", "c", "B")][-1],
        lambda s: s.list("b"),
        lambda s: s.list(),
        lambda s: s.list("b", limit=2),
    ],
}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_the_in_memory_store_answers_as_the_platform_store(script: str, store: ModuleStore) -> None:
    memory, real = Store.in_memory(), platform(store)
    for number, step in enumerate(SCRIPTS[script]):
        assert outcome(memory, step) == outcome(real, step), f"step {number} of {script!r}"
