"""Materialize module versions on this node from the bundles stored in the database.

A node asked to run a version (route call, job run, module-to-module call) whose code or
environment it does not have builds them before the worker starts: the bundle's chunks are
streamed to a temp file, its sha256 checked, it is extracted with the bundle rules, the
environment is built with the install's sandbox and rules, and the code moves into place
in one rename (an environment is complete once it carries its ready mark).

Once per version per node at a time: an asyncio lock per version in a process, and a file
lock under the data dir for the processes sharing it. A failure is remembered and answered
(503, with the reason) until its backoff ends: no restart loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modhub.errors import ModhubError, WorkerUnavailable
from modhub.lifecycle.bundle import extract_bundle, make_read_only, remove_tree, verify_tree
from modhub.lifecycle.bundles import BundleCorrupt
from modhub.lifecycle.environment import InstallError, env_ready, remove_env
from modhub.lifecycle.operations import staging_name

if TYPE_CHECKING:
    from modhub.lifecycle import Lifecycle
    from modhub.sandbox import ModuleRuntime

log = logging.getLogger("modhub.cluster")


@dataclass
class _Failure:
    """Why a version could not be materialized, and until when that answer stands."""

    reason: str
    failures: int
    until: float


class Materializer:
    """Makes sure a module version's code and environment are on this node before it runs."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_base: float = 5.0,
        backoff_max: float = 300.0,
        served: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.lifecycle = lifecycle
        self.layout = lifecycle.layout
        self.host = host or socket.gethostname()
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.served = served  # name -> version this node serves (what prefetch fetches)
        self.count = 0  # materializations done by this process
        self.materialized: set[str] = set()
        # Versions checked against the database since this node last started serving them.
        self._checked: set[tuple[str, str]] = set()
        self.last_error: str | None = None
        self._failures: dict[str, _Failure] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- one version -----------------------------------------------------------------------

    def ready(self, name: str, version: str) -> bool:
        """Return whether this node has the code and a complete environment of a version."""
        return self.layout.code(name, version).is_dir() and env_ready(
            self.layout.env(name, version)
        )

    async def ensure_runtime(self, runtime: ModuleRuntime) -> None:
        """Pool hook: materialize the version a worker is about to start for."""
        await self.ensure(runtime.name, runtime.version)

    async def ensure(self, name: str, version: str) -> None:
        """Return once `name` `version` can run here; raise WorkerUnavailable (503) with
        the reason when it cannot (remembered until its backoff ends)."""
        key = f"{name}@{version}"
        if (name, version) in self._checked and self.ready(name, version):
            return
        async with self._locks[key]:  # concurrent callers wait for the one materialization
            if (name, version) in self._checked and self.ready(name, version):
                return
            failure = self._failures.get(key)
            if failure is not None and self.clock() < failure.until:
                raise WorkerUnavailable(
                    failure.reason, module=name, retryAfter=round(failure.until - self.clock(), 1)
                )
            try:
                await asyncio.to_thread(self._materialize_locked, name, version)
            except Exception as exc:
                reason = self._reason(name, version, exc)
                failures = failure.failures + 1 if failure is not None else 1
                delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
                self._failures[key] = _Failure(reason, failures, self.clock() + delay)
                self.last_error = reason
                log.warning("%s; next attempt in %.0f s at the earliest", reason, delay)
                raise WorkerUnavailable(reason, module=name, retryAfter=delay) from exc
            if self._failures.pop(key, None) is not None and not self._failures:
                self.last_error = None  # nothing failing any more on this node
            self._checked.add((name, version))
            self.materialized.add(key)

    def _reason(self, name: str, version: str, exc: Exception) -> str:
        if isinstance(exc, InstallError) and exc.requirement:
            return (
                f"requirement {exc.requirement} of module '{name}' {version} could not be "
                f"installed on node {self.host}: {exc.detail}"
            )
        detail = exc.detail if isinstance(exc, ModhubError) else str(exc) or type(exc).__name__
        return f"module '{name}' {version} could not be materialized on node {self.host}: {detail}"

    def _materialize_locked(self, name: str, version: str) -> None:
        """In a thread: materialize under the data dir's lock for this version (another
        process sharing the data dir may have done it meanwhile)."""
        with self._file_lock(f"{name}@{version}"):
            self._materialize(name, version)

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[None]:
        folder = self.layout.root / "locks"
        if not self.layout.root.exists():  # deleted while running: made again, modhub's only
            self.layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{key}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _mark(self, name: str, version: str) -> Path:
        """Return the file naming the bundle a materialized code folder came from."""
        return self.layout.modules / name / f".{version}.bundle"

    def _materialize(self, name: str, version: str) -> None:
        started = time.monotonic()
        manifest, row = self.lifecycle.registry.version_info(name, version)
        code, env, mark = (
            self.layout.code(name, version),
            self.layout.env(name, version),
            self._mark(name, version),
        )
        if row.bundle_sha256 and mark.is_file() and mark.read_text() != row.bundle_sha256:
            # The version was removed through another node and uploaded again: other code.
            log.info("%s@%s here is of an earlier upload: materializing it again", name, version)
            remove_tree(code)
            remove_env(env)
            mark.unlink()
        if self.ready(name, version):
            return
        if not code.is_dir():
            if row.bundle_sha256 is None:
                raise WorkerUnavailable(
                    "its code is not stored in the database (installed before bundles were "
                    "stored there): start the node that installed it once, which stores it"
                )
            self._unpack(row.bundle_sha256, code, row.files)
            mark.write_text(row.bundle_sha256)
        if not env_ready(env):
            self.lifecycle.build_env(manifest, env, lambda line: log.debug("%s: %s", name, line))
        self.count += 1
        log.info(
            "materialized %s@%s from bundle %s in %.1f s",
            name,
            version,
            (row.bundle_sha256 or "")[:12],
            time.monotonic() - started,
        )

    def _unpack(self, sha256: str, code: Path, files: dict[str, Any] | None) -> None:
        """Stream a bundle to a temp file, check it, extract it, and move it to `code`."""
        staging = self.layout.staging / staging_name(uuid.uuid4().hex)
        try:
            staging.mkdir(parents=True)
            archive = staging / "bundle.tar.gz"
            with archive.open("wb") as out:
                self.lifecycle.bundles.write_to(sha256, out)
            root = extract_bundle(archive, staging / "module")
            changed = verify_tree(root, files) if files is not None else []
            if changed:
                raise BundleCorrupt(
                    f"bundle {sha256} does not hold the files registered for this version "
                    f"({len(changed)} differ, first {changed[0]['path']}): refused",
                    sha256=sha256,
                )
            code.parent.mkdir(parents=True, exist_ok=True)
            os.rename(root, code)  # the code appears whole, or not at all
            make_read_only(code)
        finally:
            remove_tree(staging)

    # -- every served version (prefetch) ---------------------------------------------------

    async def prefetch(self) -> None:
        """Materialize every version this node serves, now and after each change (`wake`)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            for name, version in (await asyncio.to_thread(self.served)).items():
                with contextlib.suppress(WorkerUnavailable):  # remembered, logged, shown
                    await self.ensure(name, version)
            await self._wake.wait()
            self._wake.clear()

    def wake(self) -> None:
        """From any thread, after the served versions changed: check a version against the
        database again once it is served again, and make a running `prefetch` look."""
        self._checked = self._checked & set(self.served().items())
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def snapshot(self) -> dict[str, Any]:
        """Return what this node materialized and its last failure, for the node list."""
        return {"materialized": sorted(self.materialized), "lastError": self.last_error}
