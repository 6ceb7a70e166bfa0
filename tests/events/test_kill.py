"""Nothing is lost when a node dies: a real node is killed with SIGKILL while it delivers,
and another node on the same PostgreSQL database delivers every event emitted before the
kill once the dead node's lease has expired (emitted counted against delivered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modhub.db import Database, upgrade
from tests.conftest import start_server, stop_server
from tests.e2e.test_module_services import install
from tests.events.conftest import EMIT_ROUTE, emitter, subscriber, write_module
from tests.jobs.conftest import wait_for
from tests.lifecycle.test_recovery import Node

# Slow enough that the node is killed in the middle of its claimed run.
SLOW = (
    "import time\n\n\n"
    "def handler(event):\n"
    "    event.store.set(f'started/{event.id}', event.attempt)\n"
    "    time.sleep(0.5)\n"
    "    event.store.set(f'done/{event.id}', event.attempt)\n"
)
ENV = {"MODHUB_EVENT_LEASE_SECONDS": "2", "MODHUB_SCHEDULER": "false"}


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only: nodes of a cluster share it."""
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    return postgres_url


def test_events_emitted_before_a_kill_are_delivered_after_recovery(
    tmp_path: Path, database_url: str
) -> None:
    first = Node(start_server(tmp_path / "a", database_url, ENV))
    second = None
    try:
        source = write_module(
            tmp_path / "src", emitter("kill-source"), {"routes/emit.py": EMIT_ROUTE}
        )
        sink = write_module(
            tmp_path / "src",
            subscriber("kill-sink", "kill-source", "events/slow.py"),
            {"events/slow.py": SLOW},
        )
        install(first, source)
        install(first, sink)
        wait_for(
            lambda: first.http.post("/m/kill-source/emit", json={"name": "x"}).status_code != 404,
            what="the route",
        )
        emitted = []
        for n in range(12):
            answer = first.http.post(
                "/m/kill-source/emit", json={"name": "thing.happened", "payload": {"n": n}}
            )
            assert answer.status_code == 200, answer.text
            emitted.append(answer.json()["id"])

        def running() -> bool:
            page = first.http.get("/events", params={"source": "kill-source", "status": "running"})
            return page.json()["total"] > 0

        wait_for(running, what="a delivery running on the first node")
        first.server.process.kill()  # SIGKILL: no shutdown, no release
        first.server.process.wait()

        second = Node(start_server(tmp_path / "b", database_url, ENV))

        def all_delivered() -> bool:
            page = second.http.get("/events", params={"source": "kill-source", "limit": 100}).json()
            states = [d["status"] for e in page["items"] for d in e["deliveries"]]
            return len(states) == len(emitted) and set(states) == {"delivered"}

        wait_for(all_delivered, timeout=120, what="every event delivered after the kill")
        done = second.http.get("/modules/kill-sink/store", params={"prefix": "done/"}).json()
        assert sorted(int(item["key"].split("/")[1]) for item in done["items"]) == sorted(emitted)
        # What the dead node had claimed was taken over: attempted again, as attempt 2.
        assert 2 in {item["value"] for item in done["items"]}
    finally:
        if first.server.process.poll() is None:
            stop_server(first.server)
        if second is not None:
            stop_server(second.server)
