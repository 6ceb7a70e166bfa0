"""Small manifests and database look-ups shared by the registry tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from modhub.db import Database
from modhub.db.models import AuditEntry, Module, ModuleDependency, ModuleVersion

ACTOR = "alice"


def manifest(
    name: str,
    version: str = "1.0.0",
    *,
    deps: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Return a valid manifest for `name`, depending on `deps`, with config schema `config`."""
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "displayName": f"{name} {version}",
        **fields,
    }
    if deps:
        data["dependencies"] = {"modules": deps}
    if config:
        data["config"] = {"schema": config}
    return data


def audit(db: Database, target: str | None = None, action: str | None = None) -> list[AuditEntry]:
    """Return the audit entries (about `target`, of `action`) in the order they were made."""
    query = select(AuditEntry).order_by(AuditEntry.id)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    with db.read() as session:
        return list(session.scalars(query))


def transitions(db: Database, target: str | None = None) -> list[tuple[str | None, str, str]]:
    """Return (module, from, to) of every recorded status change, in order."""
    return [
        (e.target, e.detail["from"], e.detail["to"]) for e in audit(db, target, "module.status")
    ]


def statuses(db: Database) -> dict[str, str]:
    """Return the status of every module, by name."""
    with db.read() as session:
        return {
            name: status for name, status in session.execute(select(Module.name, Module.status))
        }


def module_id(db: Database, name: str) -> int:
    """Return the id of module `name`."""
    with db.read() as session:
        found = session.scalar(select(Module.id).where(Module.name == name))
    assert found is not None, name
    return found


def rows(db: Database, module: int) -> dict[str, int]:
    """Return how many module, version and dependency rows the module with id `module` has."""
    with db.read() as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count()).select_from(table).where(column == module)
            )
            or 0
            for table, column in (
                (Module, Module.id),
                (ModuleVersion, ModuleVersion.module_id),
                (ModuleDependency, ModuleDependency.module_id),
            )
        }


def snapshot(db: Database) -> dict[str, Any]:
    """Return everything the registry stores, to compare before and after an operation."""
    with db.read() as session:
        modules = [
            (m.name, m.version, m.status, m.config, m.last_error, m.updated_at)
            for m in session.scalars(select(Module).order_by(Module.name))
        ]
        versions = sorted(session.execute(select(ModuleVersion.module_id, ModuleVersion.version)))
        deps = sorted(
            session.execute(select(ModuleDependency.module_id, ModuleDependency.depends_on))
        )
        entries = session.scalar(select(func.count()).select_from(AuditEntry))
    return {"modules": modules, "versions": versions, "deps": deps, "audit": entries}
