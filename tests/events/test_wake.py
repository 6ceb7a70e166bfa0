"""Waking the dispatcher: an emit on its own loop sets its event directly, one from another
thread goes through the loop's thread-safe call, and a stopped dispatcher ignores both."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from modhub.services import Services
from tests.events.conftest import Rig, with_rig


def test_a_wake_reaches_the_running_dispatcher_from_its_loop_and_from_a_thread(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(rig: Rig) -> tuple[int, int]:
        dispatcher = rig.dispatcher
        ticked = asyncio.Queue[None]()
        tick = dispatcher.tick

        async def counted(now: datetime) -> int:
            found = await tick(now)
            ticked.put_nowait(None)
            return found

        monkeypatch.setattr(dispatcher, "tick", counted)
        loop = asyncio.get_running_loop()
        through_pipe: list[Any] = []
        threadsafe = loop.call_soon_threadsafe

        def recorded(callback: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(getattr(callback, "__self__", None), asyncio.Event):
                through_pipe.append(callback)  # a wake (threads' futures come this way too)
            return threadsafe(callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", recorded)
        runner = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(ticked.get(), 30)  # its first tick; then it waits an hour

        dispatcher.wake()  # a worker's emit, on the dispatcher's loop
        await asyncio.wait_for(ticked.get(), 30)
        from_loop = len(through_pipe)

        await asyncio.to_thread(dispatcher.wake)  # a pooled emit, in a thread
        await asyncio.wait_for(ticked.get(), 30)
        from_thread = len(through_pipe) - from_loop

        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        dispatcher.wake()  # stopped: nothing to wake, nothing scheduled
        await asyncio.to_thread(dispatcher.wake)
        assert len(through_pipe) == from_loop + from_thread
        return from_loop, from_thread

    assert with_rig(services, body, poll=3600) == (0, 1)
