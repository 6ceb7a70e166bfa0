"""What one round claims (jobs/dispatch.py; on PostgreSQL jobs/pipeline.py: the outcomes,
the locks and the claim in one round trip): an outcome frees its slot for the claim of the
same round, the module's limit counts every runner's running runs, and only runs of the
jobs this runner runs, at their version, are claimed. SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from modhub.jobs.claim import CANDIDATES, claim_ready
from modhub.jobs.dispatch import ConfigReader, Outcome, Round, run_round
from modhub.jobs.pipeline import PLANS, claim_statements
from modhub.jobs.store import RunStore
from modhub.services import Services
from tests.jobs.conftest import T0, rows

NOW = T0 + timedelta(minutes=1)
_INSTANTS = itertools.count(1)  # a manual run is unique per instant


def queue(store: RunStore, module: str, job: str = "j", version: str = "1.0.0") -> int:
    """Queue a manual run (ready at NOW); return its id."""
    at = T0 + timedelta(microseconds=next(_INSTANTS))
    run = store.enqueue(module, job, version, at, trigger="manual")
    assert run is not None
    return run.id


def a_round(
    services: Services,
    outcomes: list[Outcome],
    runnable: dict[tuple[str, str], str],
    *,
    owner: str = "runner-a",
    room: int = 4,
    per_module: int = 1,
) -> Round:
    return run_round(
        services.db,
        outcomes,
        RunStore(services.db).insert_new(),
        ConfigReader(services.registry.box),
        now=NOW,
        owner=owner,
        room=room,
        per_module=per_module,
        runnable=runnable,
        probe=True,
    )


def test_an_outcome_frees_its_slot_for_the_claim_of_the_same_round(services: Services) -> None:
    store = RunStore(services.db)
    runnable = {("solo", "j"): "1.0.0"}
    first, second = queue(store, "solo"), queue(store, "solo")
    assert [c.id for c in claim_ready(services.db, NOW, "runner-a", 4, 1, runnable)] == [first]

    done = a_round(services, [Outcome(first, "succeeded", NOW, result=7)], runnable)

    assert done.recorded == {first}
    assert [c.id for c in done.claims] == [second]
    assert done.configs == {"solo": None}  # no such module registered: no config
    assert [(r.id, r.status, r.result) for r in rows(services.db)] == [
        (first, "succeeded", {"value": 7}),
        (second, "running", None),
    ]


def test_the_limit_counts_the_running_runs_of_every_runner(services: Services) -> None:
    store = RunStore(services.db)
    runnable = {("busy", "j"): "1.0.0", ("calm", "j"): "1.0.0"}
    taken = [queue(store, "busy"), queue(store, "busy")]
    waiting = queue(store, "busy")
    calm = queue(store, "calm")
    claimed = claim_ready(services.db, NOW, "runner-b", 2, 2, {("busy", "j"): "1.0.0"})
    assert [c.id for c in claimed] == taken

    done = a_round(services, [], runnable, per_module=2)

    assert [c.id for c in done.claims] == [calm]  # busy has its 2 running, on runner-b
    assert {r.id: (r.status, r.owner) for r in rows(services.db)} == {
        taken[0]: ("running", "runner-b"),
        taken[1]: ("running", "runner-b"),
        waiting: ("queued", None),
        calm: ("running", "runner-a"),
    }


def test_only_runs_of_runnable_jobs_at_their_version_are_claimed(services: Services) -> None:
    store = RunStore(services.db)
    old = queue(store, "mod", version="0.9.0")
    other_job = queue(store, "mod", job="other")
    other_module = queue(store, "elsewhere")
    wanted = queue(store, "mod")

    done = a_round(services, [], {("mod", "j"): "1.0.0"}, per_module=10)

    assert [c.id for c in done.claims] == [wanted]
    assert [r.id for r in rows(services.db, status="queued")] == [old, other_job, other_module]


def test_a_round_claims_at_most_its_room_oldest_first(services: Services) -> None:
    store = RunStore(services.db)
    runnable = {(f"m{i}", "j"): "1.0.0" for i in range(3)}
    ids = [queue(store, f"m{i % 3}") for i in range(9)]

    done = a_round(services, [], runnable, room=4, per_module=2)

    assert [c.id for c in done.claims] == ids[:4]
    assert [(c.module, c.attempt, c.scheduled_at.tzinfo is not None) for c in done.claims] == [
        ("m0", 1, True),
        ("m1", 1, True),
        ("m2", 1, True),
        ("m0", 1, True),
    ]


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """Return the rows the scans of `table` in an EXPLAIN ANALYZE plan returned, all loops."""
    own = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        own = plan["Actual Rows"] * plan["Actual Loops"]
    return own + sum(_rows_read(child, table) for child in plan.get("Plans", []))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: dispatch.py
def test_the_claim_reads_its_candidates_not_the_queue_whatever_the_stats_say(
    services: Services,
) -> None:
    """The planner's stats of a burst say one queued run (they were taken before it): the
    claim must still find the runs it marks by id, not walk every queued run for each."""
    store = RunStore(services.db)
    runnable = {(f"m{i}", "j"): "1.0.0" for i in range(4)}
    queue(store, "m0")
    with services.db.engine.connect() as connection:
        connection.execute(text("ANALYZE job_runs"))  # the stats: one queued run
        connection.commit()
    for i in range(400):
        queue(store, f"m{i % 4}")
    statements = claim_statements(
        now=NOW, owner="runner-a", room=4, per_module=2, runnable=runnable
    )
    with services.db.engine.connect() as connection:
        raw = connection.connection.driver_connection
        raw.execute(PLANS)
        for statement, params in statements[:-1]:
            raw.execute(statement, params)
        statement, params = statements[-1]
        ((plan,),) = raw.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
        connection.rollback()
    claimed = plan[0]["Plan"]["Actual Rows"]
    assert claimed == 4
    # The candidates (4 a slot), the running runs counted, the 4 runs marked: not 400+.
    assert _rows_read(plan[0]["Plan"], "job_runs") <= 4 * CANDIDATES + 4 + 4
