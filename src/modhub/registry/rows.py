"""Reading module rows: lookups, dependency checks, and the shapes the API serves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from functools import cache
from typing import Any

from sqlalchemy import Connection, Executable, String, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, aliased, selectinload

from modhub import semver
from modhub.db.models import Module, ModuleDependency, ModuleVersion
from modhub.errors import Conflict, NotFound
from modhub.manifest import Manifest
from modhub.registry import config as configs
from modhub.registry.status import Status
from modhub.registry.types import Dependency, Dependent, ModuleDetail, VersionInfo


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


def dependency_edges(session: Session, start: str, deps: list[str]) -> dict[str, list[str]]:
    """Return the dependency edges reachable from `start` if its dependencies were `deps`.

    Empty when no module depends on `start`: then it cannot close a cycle. Otherwise the
    graph is walked one level a query from `deps`, so registering a module reads the part
    of the graph below it, not every edge in the registry.
    """
    if session.execute(_DEPENDED_ON, {"name": start}).first() is None:
        return {}
    edges: dict[str, list[str]] = {start: list(deps)}
    frontier = set(deps) - {start}
    while frontier:
        for name in frontier:
            edges[name] = []
        level = sorted(frontier)
        for i in range(0, len(level), IN_CHUNK):
            for name, dep in session.execute(_EDGES_FROM, {"names": level[i : i + IN_CHUNK]}):
                edges[name].append(dep)
        frontier = {dep for name in level for dep in edges[name]} - edges.keys()
    return edges


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
    """Return the API shape of a module row changed in this session (flushed first)."""
    session.flush()
    return read_detail(session, module.name)


def read_detail(session: Session | Connection, name: str) -> ModuleDetail:
    """Return a module with its manifest, masked config, dependencies and versions.

    On PostgreSQL in one statement (the lists aggregated in subqueries): each round trip
    to the server cost more than the building of the answer. On SQLite in four.
    """
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "postgresql":
        found = session.execute(DETAIL_AGGREGATED, {"name": name}).first()
        if found is None:
            raise NotFound(f"no module named '{name}'", module=name)
        return aggregated_detail(found._mapping)
    row = session.execute(_DETAIL, {"name": name}).first()
    if row is None:
        raise NotFound(f"no module named '{name}'", module=name)
    columns = dict(row._mapping)
    needed = session.execute(_DEPENDENCIES, {"id": row.id})
    using = session.execute(_DEPENDENTS, {"name": name})
    registered = {v: at for v, at in session.execute(_VERSIONS, {"id": row.id})}
    return _detail(columns, needed, using, registered)


def aggregated_detail(row: Mapping[Any, Any]) -> ModuleDetail:
    """Return the module of a row holding DETAIL_AGGREGATED's columns (PostgreSQL), by
    name: other columns beside them are left out."""
    needed: Iterable[Sequence[Any]] = row["deps"] or ()
    using: Iterable[Sequence[Any]] = row["users"] or ()
    registered: dict[str, Any] = {
        v: at.astimezone(UTC)  # as UTCDateTime returns it
        for v, at in zip(row["version_names"] or (), row["version_times"] or (), strict=True)
    }
    return _detail({k: row[k] for k in DETAIL_COLUMNS}, needed, using, registered)


def _detail(
    columns: dict[str, Any],
    needed: Iterable[Sequence[Any]],
    using: Iterable[Sequence[Any]],
    registered: dict[str, Any],
) -> ModuleDetail:
    active = columns["version"]
    deps = [
        Dependency(
            name=dep,
            range=rng,
            installed_version=version,
            status=Status(status) if status else None,
            satisfied=version is not None and semver.satisfies(version, rng),
        )
        for dep, rng, version, status in needed
    ]
    users = [Dependent(name=n, range=r, version=v, status=Status(st)) for n, v, st, r in using]
    versions = [
        VersionInfo(version=v, registered_at=registered[v], active=v == active)
        for v in reversed(semver.sort_versions(registered))
    ]
    return ModuleDetail.model_validate(
        {
            **columns,  # the summary columns, previous_version and path
            "config": configs.masked(columns["config"]),
            "dependencies": deps,
            "dependents": users,
            "versions": versions,
        }
    )


# The reads the API serves most are built once: building a statement costs SQLAlchemy
# several times more than running it (its cache key is derived on every construction).
_Target = aliased(Module)
SUMMARY_COLUMNS = (
    Module.name,
    Module.version,
    Module.display_name,
    Module.description,
    Module.author,
    Module.license,
    Module.status,
    Module.last_error,
    Module.created_at,
    Module.updated_at,
)
_DETAIL = (
    select(
        Module.id,
        *SUMMARY_COLUMNS,
        Module.config,
        Module.previous_version,
        Module.path,
        ModuleVersion.manifest,
    )
    .join(
        ModuleVersion,
        and_(ModuleVersion.module_id == Module.id, ModuleVersion.version == Module.version),
    )
    .where(Module.name == bindparam("name"))
)
_DEPENDENCIES = (
    select(
        ModuleDependency.depends_on,
        ModuleDependency.version_range,
        _Target.version,
        _Target.status,
    )
    .outerjoin(_Target, _Target.name == ModuleDependency.depends_on)
    .where(ModuleDependency.module_id == bindparam("id"))
    .order_by(ModuleDependency.id)
)
_DEPENDENTS = (
    select(Module.name, Module.version, Module.status, ModuleDependency.version_range)
    .join(ModuleDependency)
    .where(ModuleDependency.depends_on == bindparam("name"))
    .order_by(Module.name)
)
# PostgreSQL: the detail row with its three lists, in one statement. The dependencies and
# dependents come as JSON arrays of strings; the versions as two arrays (their times
# typed: JSON would render them in the session's time zone).
_Dep = aliased(ModuleDependency)
_User = aliased(Module)
_Version = aliased(ModuleVersion)
DETAIL_AGGREGATED = _DETAIL.add_columns(
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_array(
                    _Dep.depends_on, _Dep.version_range, _Target.version, _Target.status
                ),
                _Dep.id,
            )
        )
    )
    .select_from(_Dep)
    .outerjoin(_Target, _Target.name == _Dep.depends_on)
    .where(_Dep.module_id == Module.id)
    .scalar_subquery()
    .label("deps"),
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_array(_User.name, _User.version, _User.status, _Dep.version_range),
                _User.name,
            )
        )
    )
    .select_from(_User)
    .join(_Dep, _Dep.module_id == _User.id)
    .where(_Dep.depends_on == Module.name)
    .scalar_subquery()
    .label("users"),
    select(func.array_agg(aggregate_order_by(_Version.version, _Version.id)))
    .where(_Version.module_id == Module.id)
    .scalar_subquery()
    .label("version_names"),
    select(func.array_agg(aggregate_order_by(_Version.created_at, _Version.id)))
    .where(_Version.module_id == Module.id)
    .scalar_subquery()
    .label("version_times"),
)
# The detail's own columns (the summary, config, previous_version, path, manifest): what
# a ModuleDetail is validated from beside its lists.
DETAIL_COLUMNS = tuple(column.name for column in _DETAIL.selected_columns)
_DEPENDED_ON = select(ModuleDependency.id).where(ModuleDependency.depends_on == bindparam("name"))
_EDGES_FROM = (
    select(Module.name, ModuleDependency.depends_on)
    .join(ModuleDependency)
    .where(Module.name.in_(bindparam("names", expanding=True)))
)
IN_CHUNK = 500  # names per IN (...): far below every database's limit on parameters
# (module count, newest update, version count): it moves on every registry change (a new
# version of a module leaves the module's row as it was); count(*) for SQLite.
FINGERPRINT = select(
    func.count(),
    func.max(Module.updated_at),
    select(func.count()).select_from(ModuleVersion).scalar_subquery(),
).select_from(Module)
_VERSIONS = select(ModuleVersion.version, ModuleVersion.created_at).where(
    ModuleVersion.module_id == bindparam("id")
)


@cache
def page_queries(by_status: bool, by_text: bool) -> tuple[Executable, Executable]:
    """Return the order and the page statements of a module list with these filters.

    The order statement takes `status` and `needle` (lowercase, LIKE-escaped with `/`) and
    returns the ids of the modules that match, by name: the registry keeps it per filter
    until a change, so a page is a slice of it (its length is the total) and the page
    statement reads only that slice's rows, by id (`ids`). Neither statement depends on
    the planner's guess of how far an OFFSET reaches: a page costs the same at 9,950 as
    at 0.
    """
    where = []
    if by_status:
        where.append(Module.status == bindparam("status"))
    if by_text:
        needle = bindparam("needle", type_=String)
        where.append(
            or_(
                *(
                    func.lower(column).contains(needle, escape="/")
                    for column in (Module.name, Module.display_name, Module.description)
                )
            )
        )
    order = select(Module.id).where(*where).order_by(Module.name)
    page = (
        select(*SUMMARY_COLUMNS)
        .where(Module.id.in_(bindparam("ids", expanding=True)))
        .order_by(Module.name)
    )
    return order, page


def like_escaped(text: str) -> str:
    """Return `text` with LIKE's wildcards escaped by `/` (matched literally)."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")
