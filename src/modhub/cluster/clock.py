"""TEST ONLY: a job scheduler clock that tests set through a file, for real nodes.

Tests of a real cluster need cron minutes to pass in seconds. With `MODHUB_TESTING=true`
and `MODHUB_TEST_CLOCK=<file>`, the job runner of a node reads the time from that file
(one ISO 8601 time with its zone) on each reading, and the real time while the file is
absent, so every node given the same file shares one clock that the test moves. Nothing
else reads it: tokens, node heartbeats, leases of operations and module logs keep the
real clock.

The file is trusted only when it is this process's user's own, a regular file, and not
writable by anyone else (nor its folder): another local user could otherwise fire jobs
early or hold them back. A file that fails this, or does not hold a time, is ignored with
a warning (the real time is used). Settings refuse `MODHUB_TEST_CLOCK` without
`MODHUB_TESTING`, so it never works by accident in production.
"""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("modhub.cluster")


class FileClock:
    """The time a test wrote into `path`; the real time while there is none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned: str | None = None

    def __call__(self) -> datetime:
        """Return the file's time (UTC), or the real time."""
        try:
            text = self._read()
        except FileNotFoundError:
            return datetime.now(UTC)
        except (OSError, ValueError) as exc:
            self._warn(str(exc))
            return datetime.now(UTC)
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            self._warn(f"{self.path} does not hold an ISO 8601 time: {text[:40]!r}")
            return datetime.now(UTC)
        if moment.tzinfo is None:
            self._warn(f"{self.path} holds a time without its zone: {text[:40]!r}")
            return datetime.now(UTC)
        return moment.astimezone(UTC)

    def _read(self) -> str:
        folder = os.stat(self.path.parent)
        if folder.st_uid != os.geteuid() or folder.st_mode & 0o022:
            raise ValueError(f"{self.path.parent} is not this user's alone (owner or mode)")
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise ValueError(f"{self.path} is not a regular file of this user")
            if info.st_mode & 0o022:
                raise ValueError(f"{self.path} is writable by others")
            return os.read(fd, 100).decode("ascii", errors="replace")
        finally:
            os.close(fd)

    def _warn(self, reason: str) -> None:
        if reason != self._warned:  # once per reason, not once per tick
            log.warning("test clock ignored, the real time used: %s", reason)
            self._warned = reason
