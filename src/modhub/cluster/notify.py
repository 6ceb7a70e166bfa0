"""Registry changes pushed to every node: NOTIFY in the writer's transaction, LISTEN on
one connection per node (PostgreSQL only; docs: "Cluster: change propagation").

A writer calls `announce` inside its transaction, so the notification is delivered when
the change commits and never when it rolls back. Each node runs one `ChangeListener`,
which wakes the route sync and the job runner on every notification. The payload (the
module's name) is a hint for the logs only: whoever can connect to the database can
NOTIFY anything, so a node re-reads the registry instead of trusting it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Sequence

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger("modhub.cluster")
CHANNEL = "modhub_changes"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :name)")
JOBS_CHANNEL = "modhub_jobs"  # job runs were queued: every node's runner claims now
_NOTIFY_JOBS = text(f"SELECT pg_notify('{JOBS_CHANNEL}', '')")


def announce(session: Session, name: str) -> None:
    """Tell every node that module `name` changed, when `session` commits (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY, {"name": name})


def announce_runs(session: Session | Connection) -> None:
    """Wake every node's job runner when `session` commits: it queued runs (PostgreSQL).

    PostgreSQL folds the same notification sent twice in one transaction into one."""
    bind = session if isinstance(session, Connection) else session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(_NOTIFY_JOBS)


def listener_name(pid: int | None = None, channel: str = CHANNEL) -> str:
    """Return the application_name of a node's connection listening on `channel` (in
    pg_stat_activity): `modhub-listener-<pid>` for registry changes, with the channel's
    name after it for the others (`modhub-listener-<pid>-jobs`)."""
    name = f"modhub-listener-{os.getpid() if pid is None else pid}"
    return name if channel == CHANNEL else f"{name}-{channel.removeprefix('modhub_')}"


def libpq_url(url: str) -> str:
    """Return a SQLAlchemy PostgreSQL URL as libpq takes it (no `+driver`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """Listens for registry changes of every node and calls `wake` on each one.

    `run` keeps one connection open and reconnects with backoff when it drops; after each
    (re)connection it wakes once, since changes made meanwhile were not heard. The wake
    callbacks run on the event loop and must not block.
    """

    def __init__(
        self,
        url: str,
        wake: Sequence[Callable[[], None]],
        *,
        backoff: tuple[float, float] = (0.1, 5.0),
        channel: str = CHANNEL,
    ) -> None:
        self.url = libpq_url(url)
        self.channel = channel
        self.wake = list(wake)
        self.backoff = backoff
        self.connected = False
        self.heard = 0  # notifications received since start

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        delay = self.backoff[0]
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                log.warning("change listener: %s; reconnecting in %.1f s", exc, delay)
            except Exception:  # a bug of ours must not end the listening for good
                log.exception("change listener failed; reconnecting in %.1f s", delay)
            else:  # the server closed the stream without an error
                log.warning("change listener: connection closed; reconnecting")
            if self.connected:
                delay = self.backoff[0]  # it had worked: retry soon
            self.connected = False
            await asyncio.sleep(delay * (1 + random.random() / 2))  # jitter: nodes spread
            delay = min(self.backoff[1], delay * 2)

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name=listener_name(channel=self.channel),
            connect_timeout=10,
            # A peer that vanished without closing (a network cut) is noticed in ~25 s;
            # meanwhile the fingerprint poll keeps the node in step.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        async with connection:
            await connection.execute(f"LISTEN {self.channel}")
            self.connected = True
            log.info("change listener: listening on %s", self.channel)
            self._wake()  # whatever changed while nobody listened
            async for note in connection.notifies():
                self.heard += 1
                log.debug("change notified: %.100r", note.payload)
                self._wake()

    def _wake(self) -> None:
        for wake in self.wake:
            try:
                wake()
            except Exception:
                log.exception("change listener: waking %r failed", wake)
