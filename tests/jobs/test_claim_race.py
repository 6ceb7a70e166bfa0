"""Claiming a run happens once: a run already running, cancelled or finished is never
claimed again, by `claim_ready` (the runners' claiming round) or by `RunStore.claim`, and
runners racing for the same runs each get different ones. SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from modhub.jobs.claim import Claim, claim_ready
from modhub.jobs.store import RunStore
from modhub.services import Services
from tests.jobs.conftest import T0, rows

RUNNABLE = {("mod", "j"): "1.0.0"}
NOW = T0 + timedelta(minutes=1)


def queued(store: RunStore, count: int = 1) -> list[int]:
    """Enqueue `count` manual runs of mod/j, all ready at NOW; return their ids."""
    ids = []
    for second in range(count):
        run = store.enqueue("mod", "j", "1.0.0", T0 + timedelta(seconds=second), trigger="manual")
        assert run is not None
        ids.append(run.id)
    return ids


def test_a_running_run_is_not_claimed_by_a_second_runner(services: Services) -> None:
    store = RunStore(services.db)
    [run_id] = queued(store)

    first = claim_ready(services.db, NOW, "runner-a", 4, 10, RUNNABLE)
    second = claim_ready(services.db, NOW + timedelta(seconds=1), "runner-b", 4, 10, RUNNABLE)

    assert [c.id for c in first] == [run_id]
    assert second == []
    [row] = rows(services.db)
    assert (row.status, row.owner, row.started_at) == ("running", "runner-a", NOW)


def test_cancelled_and_finished_runs_are_never_claimed(services: Services) -> None:
    store = RunStore(services.db)
    cancelled, finished = queued(store, 2)
    store.cancel(cancelled, NOW)
    assert [c.id for c in claim_ready(services.db, NOW, "runner-a", 4, 10, RUNNABLE)] == [finished]
    assert store.finish(finished, "succeeded", NOW)

    assert claim_ready(services.db, NOW, "runner-b", 4, 10, RUNNABLE) == []
    assert {r.id: r.status for r in rows(services.db)} == {
        cancelled: "cancelled",
        finished: "succeeded",
    }


def test_runners_racing_for_the_same_runs_each_claim_different_ones(services: Services) -> None:
    """Six claimers at once (threads, own connections) over twelve runs with room for
    three each: no run is claimed twice (on PostgreSQL a claimer skips the rows another
    holds, so some may get none); later rounds claim the rest, each run once."""
    store = RunStore(services.db)
    ids = queued(store, 12)
    start = threading.Barrier(6)

    def claimer(owner: str) -> list[Claim]:
        start.wait(30)
        return claim_ready(services.db, NOW, owner, 3, 100, RUNNABLE)

    with ThreadPoolExecutor(6) as threads:
        claimed = list(threads.map(claimer, [f"runner-{i}" for i in range(6)]))
    got = [c.id for claims in claimed for c in claims]
    assert got
    assert len(got) == len(set(got))  # no run claimed twice
    owners = {r.id: r.owner for r in rows(services.db, status="running")}
    assert sorted(owners) == sorted(got)
    for index, claims in enumerate(claimed):
        assert all(owners[c.id] == f"runner-{index}" for c in claims)
    for _ in ids:
        more = [c.id for c in claim_ready(services.db, NOW, "runner-z", 3, 100, RUNNABLE)]
        if not more:
            break
        got += more
    assert sorted(got) == ids


def test_store_claim_takes_a_queued_run_once(services: Services) -> None:
    store = RunStore(services.db)
    [run_id] = queued(store)

    assert store.claim(run_id, NOW, "runner-a") is True
    assert store.claim(run_id, NOW + timedelta(seconds=1), "runner-b") is False

    [row] = rows(services.db)
    assert (row.status, row.owner, row.started_at) == ("running", "runner-a", NOW)


def test_store_claim_of_a_run_cancelled_after_it_was_selected_fails(
    services: Services,
) -> None:
    # A runner selected the run, then it was cancelled before the runner claimed it.
    store = RunStore(services.db)
    [run_id] = queued(store)
    store.cancel(run_id, NOW)

    assert store.claim(run_id, NOW, "runner-a") is False
    [row] = rows(services.db)
    assert (row.status, row.owner) == ("cancelled", None)
