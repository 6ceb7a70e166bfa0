"""When each API token was last used, written off the request path and rarely.

Authentication runs on every request (on the event loop for the embedded SQLite database),
so it must not write: a write takes SQLite's one write lock and waits behind every other
writer. Instead, a use is noted in memory and written by one background thread at most
once per token per `interval`; `last_used_at` is therefore accurate to that interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import bindparam, or_, update

from modhub.db import Database
from modhub.db.models import ApiToken

log = logging.getLogger("modhub.auth")

DEFAULT_INTERVAL = 300.0  # seconds between two writes of one token's last use
_MAX_NOTES = 10_000  # beyond this, notes older than the interval are dropped

# Built once, like the authentication statements. The condition keeps the newest time when
# several processes record uses of one token.
_RECORD_USE = (
    update(ApiToken)
    .where(
        ApiToken.id == bindparam("token_id"),
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < bindparam("at")),
    )
    .values(last_used_at=bindparam("at"))
    .execution_options(synchronize_session=False)
)


class TokenUses:
    """Records API token uses in the database, at most once per token per `interval`."""

    def __init__(
        self,
        db: Database,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.interval = interval
        self._clock = clock
        self._noted: dict[int, float] = {}  # token id -> clock() of its last recorded use
        self._lock = threading.Lock()
        # One thread: writes queue in order and never compete with each other for the lock.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modhub-token-use")

    def used(self, token_id: int) -> None:
        """Note a use of `token_id`; schedule a write unless one was made within the interval.

        Cheap and never blocks on the database: it runs inside authentication.
        """
        now = self._clock()
        with self._lock:
            last = self._noted.get(token_id)
            if last is not None and now - last < self.interval:
                return
            if len(self._noted) >= _MAX_NOTES:
                self._forget_older_than(now - self.interval)
            self._noted[token_id] = now
        try:
            self._writer.submit(self._write, token_id, datetime.now(UTC))
        except RuntimeError:  # shut down: the process is stopping
            log.debug("token use of %d not recorded: shutting down", token_id)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every write scheduled so far is done."""
        done: Future[None] = self._writer.submit(lambda: None)
        done.result(timeout)

    def close(self) -> None:
        """Finish the scheduled writes and stop the writer thread."""
        self._writer.shutdown(wait=True)

    def _write(self, token_id: int, at: datetime) -> None:
        # Errors are logged, never raised: the request that noted the use is long answered.
        # The note stays, so a failing database is not retried more than once an interval.
        try:
            with self.db.write() as session:
                session.execute(_RECORD_USE, {"token_id": token_id, "at": at})
        except Exception:
            log.warning("could not record the use of API token %d", token_id, exc_info=True)

    def _forget_older_than(self, cutoff: float) -> None:
        stale = [token for token, when in self._noted.items() if when < cutoff]
        for token in stale:
            del self._noted[token]
