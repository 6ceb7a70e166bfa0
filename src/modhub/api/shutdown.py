"""Graceful shutdown: what happens between SIGTERM and the end of the process.

uvicorn does the HTTP part: on SIGTERM (or SIGINT) it closes its listening socket (a new
connection is refused), lets the requests in flight finish for `timeout_graceful_shutdown`
seconds (`modhub serve` passes MODHUB_SHUTDOWN_GRACE_SECONDS), then runs the app's lifespan
shutdown. The job runner must start its own drain at the signal, not after the requests: a
`ShutdownWatch` hears the signal beside uvicorn's handler (it chains to it) and starts
`jobs.shutdown.stop` at once, so runs and requests share the one grace period; the event
dispatcher stops beside it (`Dispatcher.stop`: the delivery in flight finishes, the rest
of its run is given back for any node). The lifespan then waits for that drain, and only
then stops the module workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from types import FrameType
from typing import Any

from modhub.events.dispatcher import Dispatcher
from modhub.jobs import JobRunner
from modhub.jobs.shutdown import stop

log = logging.getLogger("modhub.api")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownWatch:
    """Hears the stop signal of the server this app runs in, and drains the job runner
    and the event dispatcher."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.signalled = asyncio.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Chain to the server's handlers of SIGTERM and SIGINT (main thread only; a server
        run in a thread, as by a test client, has no signals to hear)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()

        def heard(number: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.signalled.set)
            previous = self._previous.get(number)
            if callable(previous):
                previous(number, frame)

        for number in SIGNALS:
            previous = signal.getsignal(number)
            if callable(previous):  # uvicorn's: without a server to stop, leave it be
                self._previous[number] = previous
                signal.signal(number, heard)

    def uninstall(self) -> None:
        """Give the signals back to the server's own handlers (a second Ctrl-C forces)."""
        for number, previous in self._previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(number, previous)
        self._previous.clear()

    async def drain(self, jobs: JobRunner, dispatcher: Dispatcher | None = None) -> None:
        """At the signal, stop `jobs` and the event `dispatcher` gracefully, side by side,
        within the one grace period."""
        await self.signalled.wait()
        stops = [stop(jobs, self.grace)]
        if dispatcher is not None:
            stops.append(dispatcher.stop(self.grace))
        await asyncio.gather(*stops)

    async def finish(self, drain: asyncio.Task[None]) -> None:
        """At the lifespan's end: wait for the drain if a signal started it, else drop it
        (the app stops without a signal: the runner stops as it always did)."""
        self.uninstall()
        if self.signalled.is_set():
            try:
                await drain
            except Exception:  # the workers stop anyway: whatever is left is interrupted
                log.exception("the job runner did not stop gracefully")
        else:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
