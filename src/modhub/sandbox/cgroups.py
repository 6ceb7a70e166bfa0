"""Memory and process-count limits on a worker's whole process tree (Linux control groups).

RLIMIT_AS and RLIMIT_NPROC bound each process of a worker on its own: a module that forks
64 children could hold 64 times its memory limit, and as root without bubblewrap NPROC
does not apply at all. A control group bounds the worker and everything it starts
together: `memory` (the limit counts its private /tmp too) and `pids`.

Each worker gets a group of its own below the server's own group (so nothing outside
what modhub was given is touched): `modhub-<server pid>-<pool>/w<n>-<module@version>`.
The worker's launcher joins it before it execs bubblewrap (see `Group.joined`), so no
process of the worker ever runs outside it. cgroup v2 is used where the server's group
delegates `memory` and `pids` (a container at the root of its own cgroup namespace, or a
systemd unit with Delegate=yes); otherwise cgroup v1's `memory` and `pids` hierarchies
where they are writable; otherwise none (`Cgroups.detect()` is None; `modhub doctor`
says which).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("modhub.sandbox")
PREFIX = "modhub-"
PROC_MOUNTS = Path("/proc/self/mounts")
PROC_CGROUP = Path("/proc/self/cgroup")
# The launcher: join every group named before `--`, then become the command after it.
JOIN = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Group:
    """One worker's control group: a folder per hierarchy (one on v2, two on v1)."""

    folders: tuple[Path, ...]

    def pids(self) -> set[int]:
        """Return every process in the group (already gone ones are not listed)."""
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def remove(self) -> None:
        """Remove the group's folders (they must be empty of processes), and the pool's
        base folder with them when no other worker's group is left in it."""
        for folder in self.folders:
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()
            with contextlib.suppress(OSError):  # not empty: other workers of the pool
                folder.parent.rmdir()

    def joined(self, argv: list[str]) -> list[str]:
        """Return `argv` started inside this group."""
        procs = [str(folder / "cgroup.procs") for folder in self.folders]
        return ["/bin/sh", "-c", JOIN, "modhub-join", *procs, "--", *argv]


class Cgroups:
    """Makes worker groups under the server's own control groups."""

    _instances = itertools.count(1)

    def __init__(self, version: int, parents: dict[str, Path]) -> None:
        self.version = version
        self.parents = parents  # controller ("memory", "pids") -> the server's own group
        self._next = 0
        self.base = f"{PREFIX}{os.getpid()}-{next(self._instances)}"

    @classmethod
    def detect(cls) -> Cgroups | None:
        """Return the groups this process may make, or None where it may make none."""
        if os.environ.get("MODHUB_CGROUPS") == "off":  # for tests of the rlimits-only floor
            return None
        for found in (_v2(), _v1()):
            if found is not None and found._usable():
                found.sweep()
                return found
        return None

    def describe(self) -> str:
        """Return what the groups bound, for `modhub doctor`."""
        return f"cgroup v{self.version} memory and pids limits on each worker's process tree"

    def create(self, key: str, memory_mb: int, max_pids: int) -> Group:
        """Make the group of one worker start, with its limits (OSError when it cannot)."""
        self._next += 1
        name = f"w{self._next}-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}"[:200]
        folders: list[Path] = []
        try:
            for controller, parent in sorted(self.parents.items()):
                folder = parent / self.base / name
                if folder not in folders:
                    folder.mkdir(parents=True, exist_ok=True)
                    folders.append(folder)
                _write_limit(folder, controller, self.version, memory_mb, max_pids)
        except OSError:
            Group(tuple(reversed(folders))).remove()
            raise
        return Group(tuple(folders))

    def sweep(self) -> None:
        """Remove groups left by modhub servers that are no longer running."""
        for parent in set(self.parents.values()):
            for base in parent.glob(f"{PREFIX}*"):
                pid = base.name.removeprefix(PREFIX).split("-")[0]
                if pid.isdecimal() and not _alive(int(pid)):
                    _remove_tree(base)

    def close(self) -> None:
        """Remove this server's groups (its workers are stopped)."""
        for parent in set(self.parents.values()):
            _remove_tree(parent / self.base)

    def _usable(self) -> bool:
        try:
            group = self.create("probe", 64, 8)
        except OSError as exc:
            log.info("control groups under %s are not usable: %s", self.parents, exc)
            self.close()
            return False
        group.remove()
        return True


def _write_limit(folder: Path, controller: str, version: int, memory_mb: int, pids: int) -> None:
    memory = str(memory_mb * 1024 * 1024)
    if controller == "pids":
        (folder / "pids.max").write_text(str(pids))
    elif version == 2:
        (folder / "memory.max").write_text(memory)
        swap = folder / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")
    else:
        (folder / "memory.limit_in_bytes").write_text(memory)


def _mounts() -> list[tuple[Path, str, set[str]]]:
    """Return (mount point, type, options) of the cgroup file systems."""
    found = []
    for line in PROC_MOUNTS.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((Path(fields[1]), fields[2], set(fields[3].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """Return this process's group path by controller ("" for the v2 hierarchy)."""
    groups = {}
    for line in PROC_CGROUP.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _v2() -> Cgroups | None:
    own = _own_groups().get("")
    mount = next((m for m, kind, _ in _mounts() if kind == "cgroup2"), None)
    if own is None or mount is None:
        return None
    parent = mount / own.lstrip("/")
    try:
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError:
        return None
    return Cgroups(2, {"memory": parent, "pids": parent})


def _v1() -> Cgroups | None:
    own = _own_groups()
    parents: dict[str, Path] = {}
    for controller in ("memory", "pids"):
        mount = next(
            (m for m, kind, opts in _mounts() if kind == "cgroup" and controller in opts), None
        )
        if mount is None or controller not in own:
            return None
        parents[controller] = mount / own[controller].lstrip("/")
    return Cgroups(1, parents)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(base: Path) -> None:
    """Remove a base group and the (empty) worker groups below it."""
    for folder in sorted((p for p in base.glob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        base.rmdir()
