"""A cluster of real `modhub serve` nodes on one PostgreSQL database behind HAProxy.

`cluster` starts three nodes (the same MODHUB_SECRET_KEY, each its own data dir and port,
installing offline from the session's test wheels) and HAProxy in front of them: round
robin, no sticky sessions, a health check on /healthz, `retries 0` and no `redispatch`, so
the balancer never hides a node's error behind a retry on another. Each answer through the
balancer names the node that gave it in `X-Served-By`. The nodes' job schedulers share a
test clock (`MODHUB_TESTING`, `MODHUB_TEST_CLOCK`: `modhub/cluster/clock.py`): the real
time until a test sets one with `Cluster.set_clock`. Tests may start more nodes (asked
directly: the balancer knows the first three), kill one with SIGKILL and restart one on its
data dir and port (the balancer sends to it again once its health check passes).

HAProxy is the Debian package `haproxy` (`make test` installs it): without it these tests
skip with the reason, and fail under MODHUB_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from modhub.db import Database, upgrade
from modhub.db.models import RunnerLease
from tests.conftest import (
    PASSWORD,
    SECRET,
    LiveServer,
    bearer,
    free_port,
    service_missing,
    stop_server,
)
from tests.lifecycle.conftest import wait_for, wheels

__all__ = ["wheels"]

NAMES = ("a", "b", "c")
BEAT = 0.2  # node heartbeat in seconds: a killed node is seen gone after three missed beats

HAPROXY_CONFIG = """\
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 180s
    timeout server 180s
    retries 0

frontend modhub
    bind 127.0.0.1:{port}
    http-response set-header X-Served-By %s
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
{servers}
"""


def launch(data_dir: Path, port: int, env: dict[str, str]) -> LiveServer:
    """Start `modhub serve` on `port` with exactly `env`; wait until /healthz answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "MODHUB_DATA_DIR": str(data_dir)}
    log = data_dir.parent / f"serve-{port}-{time.monotonic_ns()}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modhub", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    wait_healthy(server.url, 120, process, server.output)  # a start on a busy machine
    return server


def wait_healthy(
    url: str, seconds: float, process: subprocess.Popen[bytes], output: object
) -> None:
    """Wait until `url`/healthz answers 200, failing with the output if `process` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited: {output() if callable(output) else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{url} did not answer /healthz in {seconds} s")


@dataclass
class Cluster:
    """Three nodes on one PostgreSQL database, and HAProxy in front of them."""

    url: str  # the balancer
    database_url: str
    root: Path
    env: dict[str, str]
    nodes: list[LiveServer]
    balancer: subprocess.Popen[bytes]
    balancer_log: Path
    extra: list[LiveServer] = field(default_factory=list)

    def start(self, name: str, **env: str) -> LiveServer:
        """Start one more node, on an empty data dir of its own (not behind the balancer)."""
        extra = {f"MODHUB_{key.upper()}": value for key, value in env.items()}
        server = launch(self.root / name / "data", free_port(), {**self.env, **extra})
        self.extra.append(server)
        return server

    def kill(self, node: LiveServer) -> None:
        """Kill `node` with SIGKILL: no clean shutdown, its node row goes silent."""
        node.process.kill()
        node.process.wait()

    def restart(self, node: LiveServer) -> LiveServer:
        """Start `node` again on its data dir and port; return the new process."""
        if node.process.poll() is None:
            stop_server(node)
        port = int(node.url.rsplit(":", 1)[1])
        again = launch(node.data_dir, port, node.env)
        self.nodes[self.nodes.index(node)] = again
        return again

    def set_clock(self, moment: datetime) -> None:
        """Set the time every node's job scheduler reads (written whole, then renamed)."""
        set_clock(Path(self.env["MODHUB_TEST_CLOCK"]), moment)

    def login(self) -> dict[str, str]:
        """Return the admin's bearer header, from a login through the balancer."""
        answer = httpx.post(
            f"{self.url}/api/v1/auth/login",
            json={"username": "admin", "password": PASSWORD},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return bearer(answer.json()["accessToken"])

    def output(self) -> str:
        """Return what every node printed, for a failing assertion's message."""
        return "\n".join(f"== {n.url}\n{n.output()[-4000:]}" for n in self.nodes + self.extra)


def haproxy() -> str:
    """Return the haproxy binary, or skip (fail on CI) when it is not installed."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if found is None:
        service_missing("HAProxy is not installed (make test installs the Debian package haproxy)")
    assert found is not None
    return found


def node_env(database_url: str, links: Path) -> dict[str, str]:
    """Return the environment of a node (scheduler on, offline installs from `links`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATABASE_URL": database_url,
            "MODHUB_SECRET_KEY": SECRET,
            "MODHUB_ADMIN_PASSWORD": PASSWORD,
            "MODHUB_PIP_OFFLINE": "true",
            "MODHUB_PIP_FIND_LINKS": json.dumps([str(links)]),
            "MODHUB_NODE_HEARTBEAT_SECONDS": str(BEAT),
            "MODHUB_OPERATION_WAIT_SECONDS": "0",
        }
    )
    return env


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path, wheels: Path) -> Iterator[Cluster]:
    """Yield three nodes on a fresh PostgreSQL database behind HAProxy; stop them all after."""
    binary = haproxy()
    db = Database(postgres_url)
    upgrade(db.engine)
    db.dispose()
    env = {
        **node_env(postgres_url, wheels),
        "MODHUB_TESTING": "true",
        "MODHUB_TEST_CLOCK": str(clock_file(tmp_path / "clock")),
    }
    started: list[LiveServer] = []
    balancer: subprocess.Popen[bytes] | None = None
    made: Cluster | None = None
    try:
        for name in NAMES:
            started.append(launch(tmp_path / name / "data", free_port(), env))
        port = free_port()
        servers = "\n".join(
            f"    server {name} {node.url.removeprefix('http://')} check"
            for name, node in zip(NAMES, started, strict=True)
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
        log = tmp_path / "haproxy.log"
        balancer = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 30, balancer, log.read_text)
        made = Cluster(url, postgres_url, tmp_path, env, started, balancer, log)
        yield made
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(10)
        for server in started + (made.nodes + made.extra if made else []):
            if server.process.poll() is None:
                stop_server(server)


def upload(url: str, auth: dict[str, str], bundle: Path) -> httpx.Response:
    """Upload `bundle` through `url` (a node or the balancer)."""
    with bundle.open("rb") as stream:
        return httpx.post(
            f"{url}/api/v1/modules/bundles",
            files={"file": (bundle.name, stream, "application/octet-stream")},
            headers=auth,
            timeout=120,
        )


def finish(url: str, auth: dict[str, str], answer: httpx.Response) -> dict[str, Any]:
    """Return the finished operation of a 202 answer, polled at its Location through `url`."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]

    def done() -> dict[str, Any] | None:
        polled = httpx.get(url + location, headers=auth, timeout=30)
        assert polled.status_code == 200, polled.text
        view: dict[str, Any] = polled.json()
        return view if view["status"] != "running" else None

    result: dict[str, Any] = wait_for(done, 180, f"operation {location}")
    return result


# -- the nodes' shared test clock (MODHUB_TESTING, MODHUB_TEST_CLOCK) -------------------------

# Over the job runners' heartbeat (10 s), so each beats at every step, and well within their
# lease (30 s), so no runner sees another's lease expire.
CLOCK_STEP = timedelta(seconds=20)


def clock_file(folder: Path) -> Path:
    """Return the path of a test clock in `folder` (made this user's alone)."""
    folder.mkdir(mode=0o700)
    return folder / "now"


def set_clock(path: Path, moment: datetime) -> None:
    """Set the time of the test clock at `path` (written whole, then renamed)."""
    part = path.with_suffix(".part")
    part.write_text(moment.isoformat())
    part.chmod(0o600)
    part.replace(path)


def ticked_at(database_url: str, runners: int, moment: datetime) -> None:
    """Wait until `runners` job runners renewed their lease at `moment` of the test clock:
    each ticked at it (a tick renews the lease first when its heartbeat is due)."""
    db = Database(database_url)
    times: list[datetime] = []

    def seen() -> bool:
        with db.read() as session:
            times[:] = session.scalars(select(RunnerLease.seen_at)).all()
        return sum(t == moment for t in times) >= runners

    try:
        wait_for(seen, 60, f"{runners} job runners to tick at {moment}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the runners were seen at {times}") from None
    finally:
        db.dispose()


def through_minutes(
    path: Path,
    database_url: str,
    runners: int,
    start: datetime,
    minutes: int,
    finished: Callable[[datetime], bool],
) -> None:
    """Move the test clock from `start` (every runner ticked at it) through `minutes`
    scheduled minutes in `CLOCK_STEP`s, each runner ticking at every step; after each
    minute passes, wait until `finished(minute)`; end one step past the last minute."""
    now = start
    done: list[datetime] = []
    while now < start + timedelta(minutes=minutes) + CLOCK_STEP:
        now += CLOCK_STEP
        set_clock(path, now)
        ticked_at(database_url, runners, now)
        minute = now.replace(second=0, microsecond=0)
        if start < minute <= start + timedelta(minutes=minutes) and minute not in done:
            done.append(minute)
            wait_for(functools.partial(finished, minute), 60, f"the run of {minute}")
