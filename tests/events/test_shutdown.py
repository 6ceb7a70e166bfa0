"""A dispatcher stopping gracefully (SIGTERM): the delivery in flight finishes, the rest of
its run is given back at once for any node, and a delivery still going at the deadline is
a failed attempt, retried as its subscription allows (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modhub.services import Services
from tests.events.conftest import (
    Rig,
    deliveries,
    emitter,
    install,
    make_dispatcher,
    seen,
    subscriber,
    unique,
    until,
    with_rig,
)


def started(services: Services, module: str, event_id: int) -> bool:
    """Whether the GATE handler has started on this event."""
    return services.store.get_entry(module, f"started/{event_id}") is not None


def test_a_stopping_dispatcher_finishes_its_delivery_and_gives_the_rest_back(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source, "events/gate.py"))

    async def body(rig: Rig) -> None:
        ids = [rig.emit(source, {"n": n}) for n in (1, 2, 3)]
        await rig.dispatcher.tick(rig.clock())
        await until(lambda: started(services, sink, ids[0]), what="the first delivery")
        stopping = asyncio.create_task(rig.dispatcher.stop(grace=60))
        await until(lambda: rig.dispatcher.stopping, what="the stop")
        services.store.set(sink, "go", True, quota_bytes=1 << 20)  # the handler may finish now

        assert await stopping == 0  # nothing cut short
        rows = deliveries(services)
        assert [(d.status, d.attempt, d.claimed_by) for d in rows] == [
            ("delivered", 1, rig.dispatcher.owner),
            ("pending", 0, None),  # given back at once: no lease to wait out
            ("pending", 0, None),
        ]
        await rig.dispatcher.tick(rig.clock())
        assert not rig.dispatcher.tasks  # a stopped dispatcher claims nothing more

        # Another node takes the rest over at once, in emit order.
        rig.dispatcher = make_dispatcher(services, rig.pool, rig.clock)
        await rig.settle()
        assert [r["id"] for r in seen(services, sink)] == ids

    with_rig(services, body)


def test_a_delivery_still_going_at_the_deadline_is_a_failed_attempt_retried_at_once(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source, "events/gate.py"))

    async def body(rig: Rig) -> None:
        ids = [rig.emit(source, {"n": n}) for n in (1, 2)]
        await rig.dispatcher.tick(rig.clock())
        await until(lambda: started(services, sink, ids[0]), what="the first delivery")

        assert await rig.dispatcher.stop(grace=0.05) == 1  # the gate stays shut

        first, second = deliveries(services)
        assert (first.status, first.attempt, first.claimed_by) == ("pending", 1, None)
        assert first.last_error == "interrupted: the server stopped"
        assert first.next_attempt_at is not None
        assert first.next_attempt_at.replace(tzinfo=None) <= rig.clock().replace(tzinfo=None)
        assert (second.status, second.attempt, second.claimed_by) == ("pending", 0, None)

        services.store.set(sink, "go", True, quota_bytes=1 << 20)
        rig.dispatcher = make_dispatcher(services, rig.pool, rig.clock)
        await rig.settle()
        assert seen(services, sink) == [{"id": ids[0], "attempt": 2}, {"id": ids[1], "attempt": 1}]

    with_rig(services, body)


def test_an_interrupted_delivery_without_retries_left_is_dead(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(
        services, sources, subscriber(unique("sub"), source, "events/gate.py", retries=0)
    )

    async def body(rig: Rig) -> None:
        event = rig.emit(source, {"n": 1})
        await rig.dispatcher.tick(rig.clock())
        await until(lambda: started(services, sink, event), what="the delivery")

        assert await rig.dispatcher.stop(grace=0.05) == 1

        (row,) = deliveries(services)
        assert (row.status, row.last_error) == ("dead", "interrupted: the server stopped")

    with_rig(services, body)
