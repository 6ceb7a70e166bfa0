"""The worker's channel to module services: calls from handlers, replies, refusals, and
frames a hostile handler writes by hand. The services here are recording fakes; the real
store and module calls have their own tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modhub.errors import HandlerFailed, ModhubError
from modhub.sandbox import WorkerPool
from modhub.sandbox.channel import CallerContext
from tests.sandbox.conftest import Sandbox, answer_json, unique, wait_until, with_pool

SERVICES = "handlers/services.py"


class TooBig(ModhubError):
    """Stands for a store error the server raises (the worker maps it by name)."""


TooBig.__name__ = "ValueTooLarge"


class FakeStore:
    """A store per module name, recording who asked for what."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        self.seen.append((context.module, op, args))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let other calls in, as a database round trip would
            return self._run(self.data.setdefault(context.module, {}), op, args)
        finally:
            self.in_flight -= 1

    @staticmethod
    def _run(data: dict[str, Any], op: str, args: dict[str, Any]) -> Any:
        key = args.get("key", "")
        if op == "set":
            if key == "too-big":
                raise TooBig("the value of 'too-big' is larger than 1 MiB")
            version = data.get(key, {}).get("version", 0) + 1
            data[key] = {"key": key, "value": args["value"], "version": version}
            return version
        if op == "get_entry":
            return data.get(key)
        if op == "incr":
            entry = data.setdefault(key, {"key": key, "value": 0, "version": 0})
            entry["value"] += args.get("by", 1)
            entry["version"] += 1
            return entry["value"]
        if op == "list":
            return {"items": [data[k] for k in sorted(data)], "cursor": None}
        raise AssertionError(op)


def serve(pool: WorkerPool, store: FakeStore) -> None:
    pool.services["store"] = store.handle


def test_a_handler_uses_the_store_over_its_channel(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime(unique("user"))
    store = FakeStore()

    async def body(pool: WorkerPool) -> None:
        serve(pool, store)
        answer = await answer_json(pool, runtime, f"{SERVICES}:roundtrip")
        assert answer == {
            "version": 1,
            "value": {"text": "hi"},
            "missing": "fallback",
            "count": 1,
            "keys": ["greeting", "hits"],
        }
        assert await answer_json(pool, runtime, f"{SERVICES}:async_roundtrip") == {
            "value": [1, 2, 3],
            "count": 1,
        }
        assert {module for module, _, _ in store.seen} == {runtime.name}

    with_pool(sandbox, body)


def test_a_service_error_reaches_the_handler_as_the_sdk_error(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime(unique("caught"))

    async def body(pool: WorkerPool) -> None:
        serve(pool, FakeStore())
        answer = await answer_json(pool, runtime, f"{SERVICES}:refused")
        assert answer == {
            "caught": "ValueTooLarge",
            "message": "the value of 'too-big' is larger than 1 MiB",
        }

    with_pool(sandbox, body)


def test_forged_frames_act_only_as_the_worker_they_came_from(sandbox: Sandbox) -> None:
    forger = sandbox.runtime(unique("forger"))
    store = FakeStore()
    store.data["victim"] = {"k": {"key": "k", "value": "victim's", "version": 1}}

    async def body(pool: WorkerPool) -> None:
        serve(pool, store)
        answer = await answer_json(pool, forger, f"{SERVICES}:forge")
        # The forged frames with this request's own id reached the store, as the forger.
        await wait_until(lambda: any(op == "set" for _, op, _ in store.seen), 5, "a forged set")
        assert answer["after"] in ("absent", "forged")
        assert {module for module, _, _ in store.seen} == {forger.name}
        assert store.data["victim"] == {"k": {"key": "k", "value": "victim's", "version": 1}}
        # The worker survived the garbage and still answers.
        assert (await answer_json(pool, forger, f"{SERVICES}:roundtrip"))["version"] == 1

    with_pool(sandbox, body)


def test_a_flood_of_calls_is_held_to_the_workers_share(sandbox: Sandbox) -> None:
    flooder = sandbox.runtime(unique("flooder"))
    bystander = sandbox.runtime(unique("bystander"))
    store = FakeStore()

    async def body(pool: WorkerPool) -> None:
        serve(pool, store)
        flood = asyncio.create_task(
            answer_json(pool, flooder, f"{SERVICES}:flood", query={"count": "2000"})
        )
        served = 0
        while not flood.done():
            assert (await answer_json(pool, bystander, f"{SERVICES}:roundtrip"))["version"] >= 1
            served += 1
        assert (await flood) == {"last": 2000, "calls": 2000}
        assert served > 0
        assert store.most_in_flight <= 8 + 1  # the flooder's 8 slots, and the bystander's call

    with_pool(sandbox, body)


def test_without_the_service_the_call_is_refused_not_hung(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime(unique("alone"))

    async def body(pool: WorkerPool) -> None:
        with pytest.raises(HandlerFailed):
            await answer_json(pool, runtime, f"{SERVICES}:roundtrip")
        await wait_until(
            lambda: "refused: not a module service" in "\n".join(pool.logs[runtime.name]),
            5,
            "the refusal in the module log",
        )

    with_pool(sandbox, body)
