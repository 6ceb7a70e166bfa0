"""The registry: module versions, dependencies, status and config, each write one transaction."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modhub import semver
from modhub.cluster.notify import announce
from modhub.db import Database
from modhub.db.audit import record
from modhub.db.models import Module, ModuleDependency, ModuleVersion, utcnow
from modhub.errors import Conflict, DependencyCycle, InvalidInput, NotFound
from modhub.keys import SecretBox
from modhub.manifest import Manifest, ValidationResult, validate_manifest
from modhub.registry import config as configs
from modhub.registry.cache import Answer, ReadCache, to_json
from modhub.registry.graph import find_cycle
from modhub.registry.planning import disable_plan, enable_plan, upgrade_plan
from modhub.registry.rows import (
    FINGERPRINT,
    active_manifest,
    dependency_edges,
    dependents,
    descriptive,
    detail,
    find_module,
    like_escaped,
    page_queries,
    read_detail,
    refuse_busy,
)
from modhub.registry.status import Status, check_transition, path_to
from modhub.registry.subscriptions import refuse_undeclared, warn_undeclared
from modhub.registry.types import (
    ModuleDetail,
    ModulePage,
    Plan,
    PlanStep,
    UpgradePlan,
)

T = TypeVar("T")
MAX_PAGE = 500
GRAPH_LOCK = 0x6D6F6468  # PostgreSQL advisory lock held while the dependency graph changes


def parse_manifest(data: Any, *, allow_direct_references: bool = False) -> Manifest:
    """Return the typed manifest, or raise InvalidInput listing every error.

    The manifest's models bound every value the registry stores in a column, so a valid
    manifest always fits (the limits live in `modhub.manifest.model`, for the CLI too).
    """
    result = validate_manifest(data, allow_direct_references=allow_direct_references)
    if not result.valid:
        raise InvalidInput(
            f"the manifest has {len(result.errors)} error(s)",
            errors=[{**e.public(), "path": "/manifest" + e.path} for e in result.errors],
        )
    return Manifest.model_validate(data)


class Registry:
    """Registers modules and changes their status and config, one transaction a call.

    `allow_direct_references` is the operator's MODHUB_PIP_ALLOW_DIRECT_REFERENCES: whether
    manifests may require `x @ https://…` and VCS URLs (local paths never).
    """

    def __init__(
        self, db: Database, box: SecretBox, *, allow_direct_references: bool = False
    ) -> None:
        self.db = db
        self.box = box
        self.allow_direct_references = allow_direct_references
        self.listeners: list[Callable[[str], None]] = []
        # Called in the transaction of each status, version and config change, with its
        # audit action and detail (the platform's events are emitted from here).
        self.observers: list[Callable[[Session, str, str, dict[str, Any]], None]] = []
        # The API's module list and details, dropped on every change (`cache.py`): here
        # after each commit, from other nodes by `invalidate` (the change listener) and
        # by `fingerprint` when the poll sees the registry move.
        self.reads = ReadCache()
        self._seen: tuple[int, str] | None = None

    def validate(self, data: object, *, folder: Path | None = None) -> ValidationResult:
        """Validate a manifest as registration on this server would (its settings applied),
        warning about subscriptions to events the named modules do not declare."""
        result = validate_manifest(
            data, folder=folder, allow_direct_references=self.allow_direct_references
        )
        with self.db.read() as session:
            return warn_undeclared(session, data, result)

    # -- reading ---------------------------------------------------------------------------

    def list_modules(
        self,
        *,
        status: Status | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> ModulePage:
        """Return one page of modules, ordered by name, with the total that match."""
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        order, page = page_queries(status is not None, bool(q))
        params = {"status": status, "needle": like_escaped(q.lower()) if q else None}
        # The ids that match, by name, are read once per filter and registry state: a
        # page is a slice of them (a cache miss of one page reads only its rows).
        order_key = ("list-order", status, q)
        known = self.reads.get(order_key)
        generation = self.reads.generation  # before the read: see ReadCache.put
        ids = array("q")
        with self.db.query() as connection:
            if known is None:
                ids.extend(connection.scalars(order, params))
                self.reads.put(order_key, (ids.tobytes(),), generation)
            else:
                ids.frombytes(known[0])
            chosen = ids[offset : offset + limit].tolist()
            items = []
            if chosen:
                rows = connection.execute(page, {"ids": chosen})
                keys = list(rows.keys())
                items = [dict(zip(keys, row, strict=True)) for row in rows]
        total = len(ids)
        # One validation of the whole page: a third cheaper than a model per row.
        return ModulePage.model_validate(
            {"items": items, "total": total, "limit": limit, "offset": offset}
        )

    def cached(self, key: Hashable) -> Answer | None:
        """Return the cached answer under `key`, or None (no database read)."""
        return self.reads.get(key)

    def read_cached(self, key: Hashable, read: Callable[[], Answer]) -> Answer:
        """Return the cached answer under `key`, or `read` it and keep it.

        The answer must depend on the registry's rows alone: the cache is dropped on every
        registry change, and on nothing else.
        """
        found = self.reads.get(key)
        if found is None:
            generation = self.reads.generation  # before the read: see ReadCache.put
            found = read()
            self.reads.put(key, found, generation)
        return found

    def invalidate(self) -> None:
        """Drop the cached reads: another node changed the registry (any thread)."""
        self.reads.invalidate()

    @staticmethod
    def list_key(
        status: Status | None, q: str | None, limit: int, offset: int
    ) -> tuple[object, ...]:
        """Return the cache key of a module list page."""
        return ("list", status, q, max(1, min(limit, MAX_PAGE)), offset)

    def list_json(
        self,
        *,
        status: Status | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> bytes:
        """Return a page of `list_modules` as the API's JSON, from the cache when it can."""
        key = self.list_key(status, q, limit, offset)
        answer = self.read_cached(
            key,
            lambda: (to_json(self.list_modules(status=status, q=q, limit=limit, offset=offset)),),
        )
        return answer[0]

    def get(self, name: str, connection: Connection | None = None) -> ModuleDetail:
        """Return a module with its manifest, masked config, dependencies and versions
        (read on `connection`, one of `db.query()`, when given)."""
        if connection is not None:
            return read_detail(connection, name)
        with self.db.query() as connection:
            return read_detail(connection, name)

    def fingerprint(self) -> tuple[int, str]:
        """Return (module count, newest update time and version count): it moves on every
        registry change, so other processes sharing the database notice changes by polling
        it. Drops the cached reads when it moved since this process last looked."""
        with self.db.query() as connection:
            count, newest, versions = connection.execute(FINGERPRINT).one()
        seen = int(count), f"{newest} {versions}"
        if seen != self._seen:
            self._seen = seen
            self.reads.invalidate()  # a change this node was not told of (or the first look)
        return seen

    def manifest(self, name: str) -> Manifest:
        """Return the typed manifest of a module's active version."""
        with self.db.read() as session:
            return active_manifest(session, find_module(session, name))

    # -- writing ---------------------------------------------------------------------------

    def register(
        self, data: Any, *, actor: str, path: str | None = None, files: dict[str, str] | None = None
    ) -> ModuleDetail:
        """Store a manifest: a new module (REGISTERED), or a new available version.

        `path` and `files` (sha256 of each file) describe the version's code, if it has any.
        """
        manifest = parse_manifest(data, allow_direct_references=self.allow_direct_references)
        for attempt in range(3):
            try:
                return self._write(
                    lambda s: self._register(s, manifest, data, actor, path, files),
                    notify=manifest.name,
                )
            except IntegrityError:
                if attempt == 2:
                    break
                # A concurrent registration won the race; look again and report why.
        raise Conflict(
            f"module '{manifest.name}' {manifest.version} is already registered",
            module=manifest.name,
            version=manifest.version,
        )

    def _register(
        self,
        session: Session,
        manifest: Manifest,
        data: Any,
        actor: str,
        path: str | None,
        files: dict[str, str] | None,
    ) -> ModuleDetail:
        self._lock_graph(session)  # graph first, then rows: the order set_status uses
        module = session.scalars(
            select(Module).where(Module.name == manifest.name).with_for_update()
        ).first()
        if module is not None and any(v.version == manifest.version for v in module.versions):
            raise Conflict(
                f"module '{manifest.name}' {manifest.version} is already registered",
                module=manifest.name,
                version=manifest.version,
            )
        # A new version as well as a new module: a version that closes a cycle with the
        # active graph could never become active. (An upgrade checks again: the graph may
        # have moved since.)
        self._refuse_cycle(session, manifest)
        if module is None:
            module = Module(
                name=manifest.name,
                version=manifest.version,
                status=Status.REGISTERED,
                config=configs.initial_config(manifest, self.box),
                path=path,
                **descriptive(manifest),
            )
            module.dependencies = [
                ModuleDependency(depends_on=dep, version_range=rng)
                for dep, rng in manifest.dependencies.modules.items()
            ]
            session.add(module)
        module.versions.append(
            ModuleVersion(version=manifest.version, manifest=data, path=path, files=files)
        )
        session.flush()
        record(session, actor, "module.register", manifest.name, version=manifest.version)
        return detail(session, module)

    def _refuse_cycle(self, session: Session, manifest: Manifest) -> None:
        self._lock_graph(session)
        edges = dependency_edges(session, manifest.name, list(manifest.dependencies.modules))
        cycle = find_cycle(edges, manifest.name) if edges else None
        if cycle:
            raise DependencyCycle(cycle)

    def set_status(
        self, name: str, target: Status, *, actor: str, cascade: bool = False, dry_run: bool = False
    ) -> Plan | ModuleDetail:
        """Enable or disable a module, and with `cascade` its dependencies or dependents."""
        if target not in (Status.ENABLED, Status.DISABLED):
            raise InvalidInput(
                f"status must be ENABLED or DISABLED, not {target}",
                errors=[
                    {
                        "path": "/status",
                        "code": "not_allowed",
                        "message": "must be ENABLED or DISABLED",
                    }
                ],
            )

        def change(session: Session) -> Plan | ModuleDetail:
            self._lock_graph(session)
            module = find_module(session, name, lock=True)
            steps = (
                enable_plan(session, module, cascade)
                if target == Status.ENABLED
                else disable_plan(session, module, cascade)
            )
            for row, step in steps:
                if step.to == Status.ENABLED:  # 409 while a subscribed event is undeclared
                    refuse_undeclared(session, active_manifest(session, row))
            if dry_run:
                return Plan(dry_run=True, steps=[s for _, s in steps])
            for row, step in steps:
                self._move(session, row, Status(step.to or target), actor)
            return detail(session, module)

        return self._write(change, read_only=dry_run, notify=name)

    def _move(self, session: Session, module: Module, target: Status, actor: str) -> None:
        if module.status == Status.REGISTERED and module.path is not None:
            raise Conflict(
                f"module '{module.name}' has code and must be installed first", module=module.name
            )
        for status in path_to(Status(module.status), target):
            check_transition(module.name, module.status, status)
            self._audit(
                session,
                actor,
                "module.status",
                module.name,
                **{"from": module.status, "to": str(status)},
            )
            module.status = status
        module.last_error = None
        module.updated_at = utcnow()

    def _lock_graph(self, session: Session) -> None:
        """Wait until no other transaction walks or changes the dependency graph.

        Two registrations could otherwise each close half of a cycle, and status changes
        that lock modules along the graph in opposite directions could deadlock. SQLite
        writers queue anyway; on PostgreSQL this is an advisory lock held until commit.
        """
        if self.db.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GRAPH_LOCK})

    def transition(
        self, name: str, target: Status, *, actor: str, error: str | None = None
    ) -> ModuleDetail:
        """Move one module one step through the state machine (used by the lifecycle)."""

        def change(session: Session) -> ModuleDetail:
            module = find_module(session, name, lock=True)
            check_transition(name, module.status, target)
            self._audit(
                session,
                actor,
                "module.status",
                name,
                **{"from": module.status, "to": str(target)},
                **({"error": error} if error else {}),
            )
            module.status = target
            module.last_error = error
            module.updated_at = utcnow()
            return detail(session, module)

        return self._write(change, notify=name)

    def record_error(self, name: str, error: str) -> None:
        """Set a module's `lastError` without changing its status."""
        with self.db.write() as session:
            module = find_module(session, name, lock=True, missing_ok=True)
            if module is not None:
                module.last_error = error
                module.updated_at = utcnow()  # the fingerprint moves: polling nodes see it
                announce(session, name)
        self.reads.invalidate()

    def version_info(self, name: str, version: str | None = None) -> tuple[Manifest, ModuleVersion]:
        """Return the typed manifest and the row of a version (the active one by default)."""
        with self.db.read() as session:
            module = find_module(session, name)
            wanted = version or module.version
            row = next((v for v in module.versions if v.version == wanted), None)
            if row is None:
                raise NotFound(
                    f"module '{name}' has no version {wanted}", module=name, version=wanted
                )
            return Manifest.model_validate(row.manifest), row

    def check_upgrade(self, name: str, version: str) -> None:
        """Raise Conflict unless `version` can replace the active one.

        Its dependencies must be registered and inside their ranges (and ENABLED when the
        module is), every dependent's range must accept it, and no cycle may appear.
        """
        with self.db.read() as session:
            module = find_module(session, name)
            row = next((v for v in module.versions if v.version == version), None)
            if row is None:
                raise NotFound(
                    f"module '{name}' has no registered version {version}",
                    module=name,
                    version=version,
                )
            if version == module.version:
                raise Conflict(f"module '{name}' is already at {version}")
            manifest = Manifest.model_validate(row.manifest)
            problems: list[str] = []
            for dep, rng in manifest.dependencies.modules.items():
                other = find_module(session, dep, missing_ok=True)
                if other is None:
                    problems.append(f"dependency {dep} is not registered")
                elif not semver.satisfies(other.version, rng):
                    problems.append(f"dependency {dep} is at {other.version}, outside {rng}")
                elif module.status == Status.ENABLED and other.status != Status.ENABLED:
                    problems.append(f"dependency {dep} is {other.status}, not ENABLED")
            rejecting = [
                f"{m.name} needs {name} {r}"
                for m, r in session.execute(
                    select(Module, ModuleDependency.version_range)
                    .join(ModuleDependency)
                    .where(ModuleDependency.depends_on == name)
                ).all()
                if not semver.satisfies(version, r)
            ]
            edges: dict[str, list[str]] = {}
            for owner, dep in session.execute(
                select(Module.name, ModuleDependency.depends_on).join(ModuleDependency)
            ).all():
                if owner != name:
                    edges.setdefault(owner, []).append(dep)
            edges[name] = list(manifest.dependencies.modules)
            cycle = find_cycle(edges, name)
        if cycle:
            raise DependencyCycle(cycle)
        if problems or rejecting:
            raise Conflict(
                f"cannot move '{name}' to {version}: " + "; ".join(problems + rejecting),
                unmet=problems,
                dependents=rejecting,
            )

    def upgrade_plan(self, name: str, version: str) -> UpgradePlan:
        """Return what an upgrade to `version` would do, refused as the upgrade would be."""
        self.check_upgrade(name, version)
        with self.db.read() as session:
            return upgrade_plan(find_module(session, name), version, self.box)

    def switch_version(
        self,
        name: str,
        version: str,
        *,
        actor: str,
        status: Status,
        config: dict[str, Any],
        kind: str = "upgrade",
    ) -> ModuleDetail:
        """Make `version` the active one, in one transaction (the atomic step of an upgrade)."""

        def change(session: Session) -> ModuleDetail:
            self._lock_graph(session)  # graph first, then rows: the order set_status uses
            module = find_module(session, name, lock=True)
            row = next(v for v in module.versions if v.version == version)
            manifest = Manifest.model_validate(row.manifest)
            self._refuse_cycle(session, manifest)  # the graph may have moved since the check
            previous = module.version
            if not (module.status == status == Status.REGISTERED):
                check_transition(name, module.status, status)
            module.previous_version = previous
            module.version = version
            module.path = row.path
            module.config = config
            module.status = status
            module.last_error = None
            module.updated_at = utcnow()
            for key, value in descriptive(manifest).items():
                setattr(module, key, value)
            module.dependencies = [
                ModuleDependency(depends_on=dep, version_range=rng)
                for dep, rng in manifest.dependencies.modules.items()
            ]
            self._audit(session, actor, f"module.{kind}", name, **{"from": previous, "to": version})
            self._audit(
                session,
                actor,
                "module.status",
                name,
                **{"from": str(Status.UPDATING), "to": str(status)},
            )
            return detail(session, module)

        return self._write(change, notify=name)

    def set_config(self, name: str, incoming: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """Replace a module's config; return it masked. Every invalid field is listed."""

        def change(session: Session) -> dict[str, Any]:
            module = find_module(session, name, lock=True)
            manifest = active_manifest(session, module)
            new, changed = configs.update_config(manifest, module.config, incoming, self.box)
            if changed:
                module.config = new
                module.updated_at = utcnow()
                self._audit(session, actor, "module.config", name, changed=changed)
            return configs.masked(new)

        return self._write(change, notify=name)

    def stored_config(self, name: str) -> dict[str, Any]:
        """Return a module's config as stored (secrets sealed)."""
        with self.db.read() as session:
            return dict(find_module(session, name).config)

    def previous_version(self, name: str) -> str | None:
        """Return the version a rollback would return to."""
        with self.db.read() as session:
            previous: str | None = find_module(session, name).previous_version
            return previous

    def config_for_code(self, name: str) -> dict[str, Any]:
        """Return a module's config with secrets in clear, for its own handlers only."""
        with self.db.read() as session:
            return configs.unsealed(find_module(session, name).config, self.box)

    def delete(self, name: str, *, actor: str, dry_run: bool = False) -> Plan | None:
        """Remove a module with every version; refused while others depend on it."""

        def change(session: Session) -> Plan | None:
            module = find_module(session, name, lock=True)
            users = dependents(session, name)
            if users:
                names = ", ".join(d.name for d in users)
                raise Conflict(
                    f"cannot remove '{name}': {names} depend(s) on it",
                    dependents=[d.name for d in users],
                )
            if module.status != Status.REMOVING:
                refuse_busy(module)
            if dry_run:
                return Plan(
                    dry_run=True,
                    steps=[PlanStep(module=name, from_=Status(module.status), to=None)],
                )
            if module.status != Status.REMOVING:
                record(
                    session,
                    actor,
                    "module.status",
                    name,
                    **{"from": module.status, "to": str(Status.REMOVING)},
                )
            record(session, actor, "module.remove", name, version=module.version)
            session.delete(module)
            return None

        return self._write(change, read_only=dry_run, notify=name)

    # -- helpers ---------------------------------------------------------------------------

    def _audit(self, session: Session, actor: str, action: str, name: str, **detail: Any) -> None:
        """Record an audit entry and tell the observers, in the change's transaction."""
        record(session, actor, action, name, **detail)
        for observe in self.observers:
            observe(session, action, name, detail)

    def _write(self, change: Callable[[Session], T], *, notify: str, read_only: bool = False) -> T:
        if read_only:
            with self.db.read() as session:
                return change(session)
        with self.db.write() as session:
            result = change(session)
            announce(session, notify)  # other nodes hear of it when this commits
        self.reads.invalidate()  # after the commit: a read from now on sees the change
        for listener in self.listeners:
            listener(notify)
        return result
