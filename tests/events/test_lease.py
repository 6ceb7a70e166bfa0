"""A node that dies mid-delivery: its claimed deliveries stay `running` until their lease
expires, then another dispatcher claims them and delivers them (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
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
    with_rig,
)


def test_deliveries_of_a_dead_claimer_are_taken_over_after_its_lease(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))

    async def body(rig: Rig) -> None:
        ids = [rig.emit(source, {"n": n}) for n in (1, 2, 3)]
        lease = timedelta(seconds=30)
        # The "dead" node claimed all three and never came back (no renewal, no finish).
        (run,) = services.events.store.claim("dead-node", rig.clock(), 8, {sink}, lease)
        assert [d.event_id for d in run] == ids
        await rig.settle()
        assert [d.status for d in deliveries(services)] == ["running"] * 3
        assert seen(services, sink) == []
        rig.clock.advance(seconds=29)
        await rig.settle()
        assert seen(services, sink) == []  # the lease still holds
        rig.clock.advance(seconds=2)
        await rig.settle()
        assert [r["payload"]["n"] for r in seen(services, sink)] == [1, 2, 3]
        # The attempt the dead node started counts: these are second attempts.
        assert [(d.status, d.attempt) for d in deliveries(services)] == [("delivered", 2)] * 3
        # A late finish from the dead node changes nothing.
        assert services.events.store.delivered([d.id for d in run], "dead-node", rig.clock()) == 0

    with_rig(services, body, lease=timedelta(seconds=30))


def test_a_live_claimer_renews_its_lease_so_nobody_takes_its_deliveries(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))

    async def body(rig: Rig) -> None:
        rig.emit(source, {"n": 1})
        other = make_dispatcher(services, rig.pool, rig.clock, lease=timedelta(seconds=30))
        (run,) = services.events.store.claim(
            rig.dispatcher.owner, rig.clock(), 8, {sink}, timedelta(seconds=30)
        )
        for _ in range(4):  # the owner renews every 10 s while it holds deliveries
            rig.clock.advance(seconds=20)
            services.events.store.renew(rig.dispatcher.owner, rig.clock(), timedelta(seconds=30))
            await other.tick(rig.clock())
            assert not other.tasks
        assert [d.claimed_by for d in deliveries(services)] == [rig.dispatcher.owner]
        assert services.events.store.delivered([run[0].id], rig.dispatcher.owner, rig.clock()) == 1

    with_rig(services, body)
