"""Delivery through real workers: each subscriber gets each event, in emit order per source,
with retries, backoff and dead deliveries, waiting while disabled (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from modhub.registry import Status
from modhub.services import Services
from tests.events.conftest import (
    Rig,
    deliveries,
    emitter,
    install,
    seen,
    set_status,
    subscriber,
    tries,
    unique,
    with_rig,
)


def test_an_emitted_event_is_delivered_to_each_subscriber(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    first = install(services, sources, subscriber(unique("sub"), source))
    second = install(services, sources, subscriber(unique("sub"), source))
    services.registry.set_config(first, {}, actor="t")

    async def body(rig: Rig) -> int:
        event_id = rig.emit(source, {"n": 1, "vm": "vm-1"})
        assert {d.subscriber: d.status for d in deliveries(services)} == {
            first: "pending",
            second: "pending",
        }
        await rig.settle()
        return event_id

    event_id = with_rig(services, body)
    for module in (first, second):
        (record,) = seen(services, module)
        assert record["id"] == event_id
        assert (record["name"], record["source"], record["payload"]) == (
            "thing.happened",
            source,
            {"n": 1, "vm": "vm-1"},
        )
        assert record["attempt"] == 1
    rows = deliveries(services)
    assert {(d.status, d.attempt) for d in rows} == {("delivered", 1)}


def test_an_event_nobody_subscribes_to_is_stored_without_deliveries(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    install(services, sources, subscriber(unique("sub"), source))

    async def body(rig: Rig) -> None:
        rig.emit(source, {}, name="thing.gone")
        await rig.settle()

    with_rig(services, body)
    assert deliveries(services) == []
    page = services.events.store.search(source=source)
    assert [(e["name"], e["seq"], e["deliveries"]) for e in page["items"]] == [
        ("thing.gone", 1, [])
    ]


def test_each_subscriber_gets_one_sources_events_in_emit_order(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))

    async def body(rig: Rig) -> None:
        for n in range(1, 41):
            rig.emit(source, {"n": n})
        await rig.settle()

    # Small claims: the 40 events are delivered over several runs, never out of order.
    with_rig(services, body, batch=3, concurrency=4)
    assert [r["payload"]["n"] for r in seen(services, sink)] == list(range(1, 41))


def test_a_failing_delivery_is_retried_with_backoff_and_later_ones_wait_behind_it(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source, "events/flaky.py"))

    async def body(rig: Rig) -> None:
        first_id = rig.emit(source, {"n": 1})
        second_id = rig.emit(source, {"n": 2})
        await rig.settle()
        first, second = deliveries(services)
        assert (first.status, first.attempt, second.status, second.attempt) == (
            "pending",
            1,
            "pending",
            0,  # not tried: it waits behind the first
        )
        assert first.last_error is not None
        assert "failed" in first.last_error
        # The retry waits for its backoff (1 s base, up to 1.5 s with jitter) on the clock.
        assert timedelta(seconds=1) <= first.next_attempt_at - rig.clock() <= timedelta(seconds=1.5)
        rig.clock.advance(seconds=0.9)
        await rig.settle()
        assert deliveries(services)[0].attempt == 1
        for _ in range(8):
            rig.clock.advance(seconds=4)
            await rig.settle()
        assert [r["id"] for r in seen(services, sink)] == [first_id, second_id]

    with_rig(services, body)
    assert [(d.status, d.attempt) for d in deliveries(services)] == [
        ("delivered", 3),
        ("delivered", 3),
    ]


def test_a_delivery_goes_dead_after_its_retries_and_can_be_delivered_again(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(
        services, sources, subscriber(unique("sub"), source, "events/fail.py", retries=1)
    )

    async def body(rig: Rig) -> None:
        event_id = rig.emit(source, {"n": 1})
        later = rig.emit(source, {"n": 2}, name="thing.happened")
        await rig.settle()
        rig.clock.advance(seconds=2)
        await rig.settle()
        dead = deliveries(services, event_id=event_id)[0]
        assert (dead.status, dead.attempt) == ("dead", 2)
        # A dead delivery does not hold the ones behind it for good.
        assert deliveries(services, event_id=later)[0].attempt >= 1
        assert tries(services, sink, event_id) == 2
        services.events.store.redeliver(event_id, sink, rig.clock())
        again = deliveries(services, event_id=event_id)[0]
        assert (again.status, again.attempt) == ("pending", 0)
        await rig.settle()
        assert tries(services, sink, event_id) == 3

    with_rig(services, body)


def test_a_disabled_subscribers_deliveries_wait_and_run_once_it_is_enabled(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    set_status(services, sink, Status.DISABLED)

    async def body(rig: Rig) -> None:
        rig.emit(source, {"n": 1})
        await rig.settle()
        assert [d.status for d in deliveries(services)] == ["pending"]
        assert seen(services, sink) == []
        set_status(services, sink, Status.ENABLED)
        await rig.settle()

    with_rig(services, body)
    assert [r["payload"] for r in seen(services, sink)] == [{"n": 1}]


def test_events_older_than_the_retention_are_deleted(services: Services, sources: Path) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    set_status(services, sink, Status.DISABLED)

    async def body(rig: Rig) -> None:
        rig.emit(source, {"n": 1})
        rig.clock.advance(hours=71)
        rig.emit(source, {"n": 2})
        rig.clock.advance(hours=1, seconds=1)
        await rig.dispatcher.tick(rig.clock())  # the first tick prunes
        set_status(services, sink, Status.ENABLED)
        await rig.settle()

    with_rig(services, body, retention=timedelta(hours=72))
    assert [r["payload"] for r in seen(services, sink)] == [{"n": 2}]
    assert [e["seq"] for e in services.events.store.search(source=source)["items"]] == [2]


def test_removing_a_subscriber_deletes_its_pending_deliveries(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    kept = install(services, sources, subscriber(unique("sub"), source))
    gone = install(services, sources, subscriber(unique("sub"), source))
    set_status(services, kept, Status.DISABLED)
    set_status(services, gone, Status.DISABLED)

    async def body(rig: Rig) -> None:
        rig.emit(source, {"n": 1})
        done, _, op = services.lifecycle.remove(gone, actor="t")  # type: ignore[misc]
        assert done, op
        await rig.settle()

    with_rig(services, body)
    assert [(d.subscriber, d.status) for d in deliveries(services)] == [(kept, "pending")]
