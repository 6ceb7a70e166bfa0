"""Changes reach every node at once: two real `modhub serve` nodes on one PostgreSQL
database, node B's fallback poll made an hour long, so what B serves after a change made
through node A came by LISTEN/NOTIFY. The listener's connection, killed, comes back; with
the listener off, the poll at its default still catches up. Conditions are awaited with a
deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from modhub.cluster.notify import listener_name
from modhub.db import Database, upgrade
from modhub.settings import Settings
from tests.conftest import PASSWORD, LiveServer, bearer, start_server, stop_server

API = "/api/v1"
HOUR = {"MODHUB_SYNC_POLL_SECONDS": "3600"}
HELLO = Path(__file__).resolve().parents[2] / "examples" / "modules" / "hello"
BARE = {
    "name": "bare",
    "version": "1.0.0",
    "displayName": "Bare",
    "description": "A bare manifest: its route answers 501 when ENABLED, 404 otherwise.",
    "author": "tests",
    "license": "MIT",
    "capabilities": {"api": {"routes": [{"method": "GET", "path": "/ping", "handler": "h.py"}]}},
}


@dataclass
class Node:
    """A running node and an admin client of it."""

    server: LiveServer
    client: httpx.Client

    @property
    def pid(self) -> int:
        return self.server.process.pid


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll `check` until it holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def database(postgres_url: str) -> str:
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    return postgres_url


@pytest.fixture
def nodes(tmp_path: Path, database: str) -> Iterator[Callable[..., Node]]:
    """Start nodes on the one database (`start(name, env)`); all stop at the end."""
    started: list[Node] = []

    def start(name: str, env: dict[str, str] | None = None) -> Node:
        server = start_server(tmp_path / name / "data", database, env)
        client = httpx.Client(base_url=server.url, timeout=30)
        login = {"username": "admin", "password": PASSWORD}
        answer = client.post(f"{API}/auth/login", json=login)
        assert answer.status_code == 200, answer.text
        client.headers.update(bearer(answer.json()["accessToken"]))
        started.append(Node(server, client))
        return started[-1]

    yield start
    for node in started:
        node.client.close()
        stop_server(node.server)


def listener_pid(database: str, node: Node) -> int | None:
    """Return the backend pid of `node`'s listening connection, None if it has none."""
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            (listener_name(node.pid),),
        ).fetchone()
    return None if row is None else int(row[0])


def listening(database: str, node: Node) -> int:
    """Wait until `node` listens; return its listening connection's backend pid."""
    found: list[int] = []

    def check() -> bool:
        pid = listener_pid(database, node)
        if pid is not None:
            found.append(pid)
        return pid is not None

    wait_for(check, f"a listening connection of node {node.pid}")
    return found[-1]


def set_status(node: Node, name: str, status: str) -> None:
    answer = node.client.put(f"{API}/modules/{name}/status", json={"status": status})
    assert answer.status_code == 200, answer.text


def serves(node: Node, path: str, status: int) -> Callable[[], bool]:
    return lambda: node.client.get(f"{API}/m/{path}").status_code == status


def register_bare(node: Node) -> None:
    answer = node.client.post(f"{API}/modules", json={"manifest": BARE})
    assert answer.status_code == 201, answer.text


def test_a_change_through_one_node_is_served_by_the_other_at_once(
    nodes: Callable[..., Node], database: str
) -> None:
    a, b = nodes("a"), nodes("b", HOUR)
    listening(database, b)
    register_bare(a)
    set_status(a, "bare", "ENABLED")
    wait_for(serves(b, "bare/ping", 501), "node B to serve the enabled module")
    set_status(a, "bare", "DISABLED")
    wait_for(serves(b, "bare/ping", 404), "node B to stop serving the disabled module")
    answer = a.client.delete(f"{API}/modules/bare")
    assert answer.status_code == 204, answer.text
    register_bare(a)  # removed and registered again: B hears both
    set_status(a, "bare", "ENABLED")
    wait_for(serves(b, "bare/ping", 501), "node B to serve the module registered again")


def test_the_listener_reconnects_after_its_connection_is_killed(
    nodes: Callable[..., Node], database: str
) -> None:
    a, b = nodes("a"), nodes("b", HOUR)
    register_bare(a)
    first = listening(database, b)
    with psycopg.connect(database, autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone()
    assert killed == (True,)
    wait_for(
        lambda: listener_pid(database, b) not in (None, first), "node B's listener to reconnect"
    )
    set_status(a, "bare", "ENABLED")
    wait_for(serves(b, "bare/ping", 501), "node B to hear a change after reconnecting")
    set_status(a, "bare", "DISABLED")
    wait_for(serves(b, "bare/ping", 404), "node B to hear the next change too")


def test_each_listening_connection_is_named_for_its_channel(
    nodes: Callable[..., Node], database: str
) -> None:
    """Registry changes, job wakes and emitted events: three connections, told apart in
    pg_stat_activity (an operator, or the test above, kills the one it means)."""
    a = nodes("a")
    base = listener_name(a.pid)

    def names() -> set[str]:
        with psycopg.connect(database, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"{base}%",),
            ).fetchall()
        return {str(row[0]) for row in rows}

    wait_for(lambda: names() == {base, f"{base}-jobs", f"{base}-events"}, "three named listeners")


def test_with_the_listener_off_the_poll_still_catches_up(
    nodes: Callable[..., Node], database: str
) -> None:
    a, b = nodes("a"), nodes("b", {"MODHUB_LISTEN_CHANGES": "false"})  # poll every 1 s
    register_bare(a)
    set_status(a, "bare", "ENABLED")
    wait_for(serves(b, "bare/ping", 501), "node B's poll to catch up")
    assert listener_pid(database, b) is None  # it came by the poll
    set_status(a, "bare", "DISABLED")
    wait_for(serves(b, "bare/ping", 404), "node B's poll to catch up again")


def test_a_config_change_is_served_by_the_other_node_at_once(
    nodes: Callable[..., Node], database: str, tmp_path: Path
) -> None:
    from modhub.lifecycle.bundle import pack_folder

    a, b = nodes("a"), nodes("b", HOUR)
    listening(database, b)
    bundle = pack_folder(HELLO, tmp_path / "hello.tar.gz")
    with bundle.open("rb") as stream:
        files = {"file": (bundle.name, stream, "application/gzip")}
        answer = a.client.post(f"{API}/modules/bundles", files=files)
    assert answer.status_code == 201, answer.text
    answer = a.client.put(f"{API}/modules/hello/status", json={"status": "ENABLED"})
    assert answer.status_code in (200, 202), answer.text
    greeting: dict[str, Any] = {}

    def greets(text: str) -> Callable[[], bool]:
        def check() -> bool:
            answer = b.client.get(f"{API}/m/hello/greet/Ada")
            greeting["last"] = answer.status_code, answer.text
            return answer.status_code == 200 and answer.json()["message"] == f"{text}, Ada!"

        return check

    wait_for(greets("Hello"), "node B to serve hello", seconds=180)
    answer = a.client.put(f"{API}/modules/hello/config", json={"config": {"greeting": "Hi"}})
    assert answer.status_code == 200, answer.text
    wait_for(greets("Hi"), "node B to serve the new greeting")


@pytest.mark.parametrize("value", ["0", "-1", "100000", "soon"])
def test_a_bad_poll_interval_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MODHUB_SYNC_POLL_SECONDS", value)
    with pytest.raises(ValidationError, match="sync_poll_seconds"):
        Settings()


def test_a_change_made_while_the_listener_was_away_arrives_when_it_reconnects(
    nodes: Callable[..., Node], database: str
) -> None:
    a, b = nodes("a"), nodes("b", HOUR)
    register_bare(a)
    first = listening(database, b)
    name = database.rsplit("/", 1)[1]
    with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        # No new connection to the database until the change is made: B's listener cannot
        # reconnect, so the change's notification reaches nobody on B (the open
        # connections of both nodes' pools keep working).
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            set_status(a, "bare", "ENABLED")
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    wait_for(serves(b, "bare/ping", 501), "node B to catch up on reconnecting")
    assert listener_pid(database, b) not in (None, first)
