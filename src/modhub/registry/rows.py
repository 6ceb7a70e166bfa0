"""Reading module rows: lookups, dependency checks, and the shapes the API serves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from modhub import semver
from modhub.db.models import Module, ModuleDependency
from modhub.errors import Conflict, NotFound
from modhub.manifest import Manifest
from modhub.registry import config as configs
from modhub.registry.status import Status
from modhub.registry.types import Dependency, Dependent, ModuleDetail, ModuleSummary, VersionInfo


def find_module(
    session: Session, name: str, *, lock: bool = False, missing_ok: bool = False
) -> Any:
    """Return a module row with its versions and dependencies (NotFound unless missing_ok)."""
    query = (
        select(Module)
        .where(Module.name == name)
        .options(selectinload(Module.versions), selectinload(Module.dependencies))
    )
    module = session.scalars(query.with_for_update() if lock else query).first()
    if module is None and not missing_ok:
        raise NotFound(f"no module named '{name}'", module=name)
    return module


def dependents(session: Session, name: str, *, lock: bool = False) -> Sequence[Module]:
    """Return the modules whose active version depends on `name`."""
    query = (
        select(Module)
        .join(ModuleDependency)
        .where(ModuleDependency.depends_on == name)
        .order_by(Module.name)
    )
    return session.scalars(query.with_for_update() if lock else query).all()


def active_manifest(session: Session, module: Module) -> Manifest:
    """Return the typed manifest of a module's active version."""
    active = next(v for v in module.versions if v.version == module.version)
    return Manifest.model_validate(active.manifest)


def unmet(dep: ModuleDependency, other: Module | None) -> str | None:
    """Return why a dependency is not met by `other`, or None."""
    if other is None:
        return "is not registered"
    if not semver.satisfies(other.version, dep.version_range):
        return f"is at version {other.version}, outside {dep.version_range}"
    return None


def summary(module: Any) -> ModuleSummary:
    """Return the list shape of a module."""
    return ModuleSummary(
        name=module.name,
        version=module.version,
        display_name=module.display_name,
        description=module.description,
        author=module.author,
        license=module.license,
        status=Status(module.status),
        last_error=module.last_error,
        created_at=module.created_at,
        updated_at=module.updated_at,
    )


def descriptive(manifest: Manifest) -> dict[str, Any]:
    """Return the manifest fields copied onto the module row."""
    return {
        "display_name": manifest.display_name,
        "description": manifest.description,
        "author": manifest.author,
        "license": manifest.license,
    }


def refuse_busy(module: Module) -> None:
    """Raise Conflict while a module is in a transitional state."""
    if module.status in (Status.INSTALLING, Status.UPDATING, Status.REMOVING):
        raise Conflict(f"module '{module.name}' is {module.status}; try again when it is done")


def detail(session: Session, module: Module) -> ModuleDetail:
    """Return a module with its manifest, masked config, dependencies and versions."""
    active = next(v for v in module.versions if v.version == module.version)
    names = [dep.depends_on for dep in module.dependencies]
    found = (
        {
            name: (version, status)
            for name, version, status in session.execute(
                select(Module.name, Module.version, Module.status).where(Module.name.in_(names))
            ).all()
        }
        if names
        else {}
    )
    deps = []
    for dep in module.dependencies:
        version, status = found.get(dep.depends_on, (None, None))
        satisfied = version is not None and semver.satisfies(version, dep.version_range)
        deps.append(
            Dependency(
                name=dep.depends_on,
                range=dep.version_range,
                installed_version=version,
                status=Status(status) if status else None,
                satisfied=satisfied,
            )
        )
    users = [
        Dependent(name=n, range=r, version=v, status=Status(st))
        for n, v, st, r in session.execute(
            select(Module.name, Module.version, Module.status, ModuleDependency.version_range)
            .join(ModuleDependency)
            .where(ModuleDependency.depends_on == module.name)
            .order_by(Module.name)
        ).all()
    ]
    by_version = {v.version: v for v in module.versions}
    versions = [
        VersionInfo(version=v, registered_at=by_version[v].created_at, active=v == module.version)
        for v in reversed(semver.sort_versions(by_version))
    ]
    return ModuleDetail(
        **summary(module).model_dump(),
        manifest=active.manifest,
        config=configs.masked(module.config),
        dependencies=deps,
        dependents=users,
        versions=versions,
        previous_version=module.previous_version,
        path=module.path,
    )
