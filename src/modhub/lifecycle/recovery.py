"""Crash recovery: bring every module back to a stable state at start-up, and take over
the operations of a node that is gone while the cluster runs.

An operation row still `running` whose process is gone was cut short by a crash. Each
module it left in a transitional state is finished or undone, half-written folders and
environments are removed, and every action is written to the audit log.

`take_over` does the same for the operations of a process that died while others run (a
node of the cluster seen gone, or a process on this host whose pid is dead): one live node
claims each (an update that only one can win), marks it interrupted and settles its module;
the dead node's own files are swept when it starts again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update

from modhub.db.audit import SYSTEM, record
from modhub.db.models import Module, ModuleVersion, Operation, utcnow
from modhub.errors import ModhubError
from modhub.lifecycle.bundle import remove_tree
from modhub.lifecycle.environment import remove_env
from modhub.lifecycle.operations import staging_owner
from modhub.lifecycle.service import Lifecycle
from modhub.registry import Status


def owner_alive(owner: str) -> bool:
    """Return whether the process that started an operation may still be running."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdecimal():
        return True  # another machine's operation: not ours to judge
    if int(pid) == os.getpid():
        return False  # our own pid recycled after a restart: the old process is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(lifecycle: Lifecycle) -> list[str]:
    """Finish or undo interrupted operations and sweep orphaned files; return what was done."""
    db = lifecycle.registry.db
    done: list[str] = []
    with db.write() as session:
        interrupted = [
            op
            for op in session.scalars(select(Operation).where(Operation.status == "running"))
            if not owner_alive(str(op.detail.get("owner", "")))
        ]
        for op in interrupted:
            op.status = "failed"
            op.error = "interrupted: the server stopped while this operation ran"
            op.finished_at = utcnow()
            record(session, SYSTEM, "recovery.operation", op.module, operation=op.id, kind=op.kind)
            done.append(f"operation {op.id} ({op.kind} {op.module}) marked interrupted")
    starts = {op.module: op.detail.get("fromStatus") for op in interrupted}
    keep_data = {op.module for op in interrupted if op.detail.get("keepData")}
    busy = {op.module for op in _running(lifecycle)}
    with db.read() as session:
        stuck = session.scalars(
            select(Module).where(
                Module.status.in_([Status.INSTALLING, Status.UPDATING, Status.REMOVING])
            )
        ).all()
    for module in stuck:
        if module.name in busy:
            continue
        done.append(_settle(lifecycle, module, starts.get(module.name), module.name in keep_data))
    swept = _sweep(lifecycle, others_busy=bool(busy))
    if swept:
        with db.write() as session:
            for target, action in swept:
                record(session, SYSTEM, "recovery.cleanup", target, removed=action)
    return done + [action for _, action in swept]


def take_over(lifecycle: Lifecycle, dead: Callable[[str], bool]) -> list[str]:
    """Settle the running operations whose owner `dead` says is gone; return what was done.

    Several live nodes may call this at once: each operation is claimed by the one whose
    conditional update marks it interrupted, and only that one settles its module.
    """
    db = lifecycle.registry.db
    with db.read() as session:
        orphans = [
            (op.id, op.module, op.kind, dict(op.detail))
            for op in session.scalars(select(Operation).where(Operation.status == "running"))
            if dead(str(op.detail.get("owner", "")))
        ]
    done: list[str] = []
    for op_id, name, kind, detail in orphans:
        with db.write() as session:
            claimed = session.execute(
                update(Operation)
                .where(Operation.id == op_id, Operation.status == "running")
                .values(
                    status="failed",
                    error="interrupted: its node stopped while this operation ran",
                    finished_at=utcnow(),
                )
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                continue  # another live node took it
            record(session, SYSTEM, "recovery.operation", name, operation=op_id, kind=kind)
        done.append(f"operation {op_id} ({kind} {name}) of a gone node marked interrupted")
        with db.read() as session:
            module = session.scalars(select(Module).where(Module.name == name)).first()
        if module is None or module.status not in (
            Status.INSTALLING,
            Status.UPDATING,
            Status.REMOVING,
        ):
            continue
        if any(op.module == name for op in _running(lifecycle)):
            continue  # a live process works on it again
        try:
            done.append(
                _settle(
                    lifecycle,
                    module,
                    detail.get("fromStatus"),
                    bool(detail.get("keepData")),
                    note="interrupted: its node stopped",
                )
            )
        except ModhubError as exc:  # changed meanwhile by someone else: theirs stands
            done.append(f"{name}: not settled ({exc.detail})")
    return done


def _running(lifecycle: Lifecycle) -> list[Operation]:
    with lifecycle.registry.db.read() as session:
        return [
            op
            for op in session.scalars(select(Operation).where(Operation.status == "running"))
            if owner_alive(str(op.detail.get("owner", "")))
        ]


def _settle(
    lifecycle: Lifecycle,
    module: Module,
    start: str | None,
    keep_data: bool,
    note: str = "interrupted by a restart",
) -> str:
    registry, name = lifecycle.registry, module.name
    if module.status == Status.INSTALLING:
        remove_env(lifecycle.layout.env(name, module.version))
        registry.transition(
            name, Status.REGISTERED, actor=SYSTEM, error=f"install {note}; enable again"
        )
        return f"{name}: install undone, back to REGISTERED"
    if module.status == Status.UPDATING:
        back = Status(start) if start in (Status.ENABLED, Status.DISABLED) else Status.DISABLED
        registry.transition(
            name, back, actor=SYSTEM, error=f"upgrade {note}; still at {module.version}"
        )
        return f"{name}: upgrade undone, back to {back} at {module.version}"
    registry.delete(name, actor=SYSTEM)
    if not keep_data:
        lifecycle.delete_data(name, lambda line: None)
    lifecycle.delete_files(name)
    return f"{name}: removal completed" + (", its stored data kept" if keep_data else "")


def _sweep(lifecycle: Lifecycle, *, others_busy: bool) -> list[tuple[str | None, str]]:
    """Remove what no module owns; return (module or None, what was done) for the audit.

    What a live process sharing the data dir is still making is left alone: its staging
    folders (named for it), and, while it runs an operation, code and environment
    folders no row refers to yet (the next start-up sweeps them).
    """
    layout = lifecycle.layout
    done: list[tuple[str | None, str]] = []
    with lifecycle.registry.db.read() as session:
        # By name and version, not by the stored path: a data dir reached by another path
        # (moved, or through a link) must not have every module's code swept away.
        code = {
            layout.code(name, version)
            for name, version, path in session.execute(
                select(Module.name, ModuleVersion.version, ModuleVersion.path).join(Module)
            )
            if path
        }
        envs = {
            lifecycle.layout.env(m.name, v)
            for m in session.scalars(select(Module))
            for v in (m.version, m.previous_version)
            if v
        }
    for staging in _children(layout.staging):
        owner = staging_owner(staging.name)
        if owner is not None and owner_alive(owner):
            continue
        remove_tree(staging)
        done.append((None, f"removed staging folder {staging.name}"))
    for folder, keep, remove in (
        ()
        if others_busy
        else ((layout.modules, code, remove_tree), (layout.envs, envs, remove_env))
    ):
        for version in (v for m in _children(folder) for v in _children(m)):
            if version not in keep:
                remove(version)
                done.append(
                    (version.parent.name, f"removed orphaned {version.relative_to(layout.root)}")
                )
        for empty in _children(folder):
            if not any(empty.iterdir()):
                empty.rmdir()
    return done


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
