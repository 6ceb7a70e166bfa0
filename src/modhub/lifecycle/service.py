"""The lifecycle: bundles, installs into per-module environments, status changes in
dependency order, upgrade with rollback, and removal, each as a recorded operation."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from modhub.errors import Conflict, InvalidInput, ModhubError
from modhub.lifecycle import typescript
from modhub.lifecycle.bundle import (
    extract_bundle,
    hash_tree,
    make_read_only,
    remove_tree,
    verify_tree,
)
from modhub.lifecycle.bundles import BundleStore
from modhub.lifecycle.environment import PackageIndex, create_env, env_ready, remove_env
from modhub.lifecycle.layout import Layout
from modhub.lifecycle.operations import Context, Handle, Operations, staging_name
from modhub.lifecycle.system import check_system
from modhub.manifest import Manifest, load_manifest
from modhub.registry import Registry, Status
from modhub.registry import config as configs
from modhub.registry.types import ModuleDetail, Plan, RemovalPlan, StoredData
from modhub.sandbox import launch
from modhub.settings import Settings
from modhub.store import DEFAULT_STORAGE_MB, ModuleStore

T = TypeVar("T")
Outcome = tuple[bool, Any, str]  # (done, result, operation id)
MB = 1024 * 1024


def quota_bytes(storage_mb: int | None, settings: Settings) -> int:
    """Return the bytes a store may hold for a manifest's `runtime.storageMb` (None: the
    default), capped by MODHUB_MAX_MODULE_STORAGE_MB."""
    return min(storage_mb or DEFAULT_STORAGE_MB, settings.max_module_storage_mb) * MB


def storage_quota_bytes(manifest: Manifest, settings: Settings) -> int:
    """Return the bytes the module of `manifest` may keep in its store."""
    return quota_bytes(manifest.runtime.storage_mb, settings)


class Lifecycle:
    """Does the work behind every status change, on files, environments and the registry."""

    def __init__(
        self,
        registry: Registry,
        operations: Operations,
        settings: Settings,
        store: ModuleStore,
    ) -> None:
        self.registry = registry
        self.operations = operations
        self.settings = settings
        self.store = store
        self.layout = Layout(settings.data_dir)
        self.bundles = BundleStore(registry.db, self.layout.staging)
        self.index = PackageIndex(
            index_url=settings.pip_index_url,
            find_links=tuple(settings.pip_find_links),
            offline=settings.pip_offline,
        )

    # -- bundles ---------------------------------------------------------------------------

    def add_bundle(self, upload: Path, *, actor: str) -> ModuleDetail:
        """Unpack a bundle safely, validate it with its files, store it read-only, register it."""
        # Named for this process, so that another one's start-up sweep leaves it alone.
        staging = self.layout.staging / staging_name(uuid.uuid4().hex)
        try:
            root = extract_bundle(upload, staging / "module")
            data = load_manifest(root)
            result = self.registry.validate(data, folder=root)
            if not result.valid:
                raise InvalidInput(
                    f"the bundle's manifest has {len(result.errors)} error(s)",
                    errors=[{**e.public(), "path": "/manifest" + e.path} for e in result.errors],
                )
            name, version = data["name"], data["version"]
            target = self.layout.code(name, version)
            target.parent.mkdir(parents=True, exist_ok=True)
            files = hash_tree(root)
            try:
                os.rename(root, target)
            except OSError:
                raise Conflict(
                    f"module '{name}' {version} is already registered", module=name, version=version
                ) from None
            sha256: str | None = None
            try:
                # In the database before the version is: a version never refers to a bundle
                # that is not there. A failure leaves at most an orphan, deleted right here.
                sha256 = self.bundles.store(target)
                detail = self.registry.register(data, actor=actor, path=str(target), files=files)
                self.bundles.attach(name, version, sha256)
            except BaseException:
                remove_tree(target)
                if sha256 is not None:
                    self.bundles.delete_unreferenced([sha256])
                raise
            make_read_only(target)
            return detail
        finally:
            remove_tree(staging)

    def verify(self, name: str) -> list[dict[str, str]]:
        """Return every file of the active version changed since it was installed."""
        _, row = self.registry.version_info(name)
        if row.path is None or row.files is None:
            return []
        return verify_tree(Path(row.path), row.files)

    # -- status ----------------------------------------------------------------------------

    def set_status(
        self, name: str, target: Status, *, actor: str, cascade: bool = False, dry_run: bool = False
    ) -> Plan | Outcome:
        """Enable or disable, installing REGISTERED modules that have code on the way."""
        plan = self.registry.set_status(name, target, actor=actor, cascade=cascade, dry_run=True)
        assert isinstance(plan, Plan)
        for step in plan.steps:
            if step.to == Status.ENABLED:
                self.check_ceilings(self.registry.version_info(step.module)[0])
        if dry_run:
            return plan
        to_install = [s.module for s in plan.steps if s.from_ == Status.REGISTERED]

        def work(ctx: Context) -> ModuleDetail:
            for module in to_install:
                self._install(ctx, module, actor)
            with ctx.step("set-status"):
                detail = self.registry.set_status(name, target, actor=actor, cascade=cascade)
            assert isinstance(detail, ModuleDetail)
            return detail

        return self._run("enable" if target == Status.ENABLED else "disable", name, actor, work)

    def _install(self, ctx: Context, name: str, actor: str) -> None:
        manifest, row = self.registry.version_info(name)
        if row.path is None:
            return  # a bare manifest: nothing to install; the registry passes INSTALLING
        self.registry.transition(name, Status.INSTALLING, actor=actor)
        env = self.layout.env(name, row.version)
        try:
            with ctx.step("check-system"):
                _require_system(manifest.dependencies.system)
            with ctx.step("create-environment"):
                self._build_env(ctx, manifest, env)
            ctx.checkpoint("installed")
        except BaseException as exc:
            remove_env(env)
            self.registry.transition(
                name, Status.REGISTERED, actor=actor, error=f"install failed: {_message(exc)}"
            )
            raise
        self.registry.transition(name, Status.DISABLED, actor=actor)

    def _build_env(self, ctx: Context, manifest: Manifest, env: Path) -> None:
        self.build_env(manifest, env, ctx.log)

    def build_env(self, manifest: Manifest, env: Path, log: Callable[[str], None]) -> None:
        """Build a module version's environment in the install sandbox. A folder already
        there is a leftover (an interrupted build, never a finished one): it goes first."""
        remove_env(env)
        create_env(
            env,
            manifest.dependencies.python,
            index=self.index,
            cache_dir=self.layout.uv_cache / manifest.name,
            owner=manifest.name,
            source_builds=self.settings.pip_allow_source_builds,
            direct_references=self.settings.pip_allow_direct_references,
            log=log,
            finish=functools.partial(
                typescript.build,
                manifest,
                self.layout.code(manifest.name, manifest.version),
                owner_uid=launch.module_uid(manifest.name) if os.getuid() == 0 else os.getuid(),
                cache_dir=self.layout.root / "cache" / "npm" / manifest.name,
                log=log,
            ),
        )

    def check_ceilings(self, manifest: Manifest) -> None:
        """Refuse to run a module version whose runtime limits exceed the operator's."""
        runtime, settings = manifest.runtime, self.settings
        over = [
            f"runtime.{field} {value} is above {setting} ({ceiling})"
            for field, value, setting, ceiling in (
                (
                    "memoryMb",
                    runtime.memory_mb,
                    "MODHUB_MAX_MODULE_MEMORY_MB",
                    settings.max_module_memory_mb,
                ),
                (
                    "timeoutMs",
                    runtime.timeout_ms,
                    "MODHUB_MAX_MODULE_TIMEOUT_MS",
                    settings.max_module_timeout_ms,
                ),
                (
                    "maxConcurrency",
                    runtime.max_concurrency,
                    "MODHUB_MAX_MODULE_CONCURRENCY",
                    settings.max_module_concurrency,
                ),
                (
                    "storageMb",
                    runtime.storage_mb,
                    "MODHUB_MAX_MODULE_STORAGE_MB",
                    settings.max_module_storage_mb,
                ),
            )
            if value is not None and value > ceiling
        ]
        if over:
            raise Conflict(
                f"module '{manifest.name}' {manifest.version} asks for more than this server "
                f"allows: {'; '.join(over)}",
                module=manifest.name,
                ceilings=over,
            )

    # -- upgrade and rollback --------------------------------------------------------------

    def upgrade(self, name: str, version: str, *, actor: str, kind: str = "upgrade") -> Outcome:
        """Install `version` beside the active one and switch to it; on failure keep the old."""
        self.registry.check_upgrade(name, version)
        start = Status(self.registry.get(name).status)
        if start not in (Status.ENABLED, Status.DISABLED, Status.REGISTERED):
            raise Conflict(f"module '{name}' is {start}; try again when it is done")
        if start == Status.ENABLED:
            self.check_ceilings(self.registry.version_info(name, version)[0])

        def work(ctx: Context) -> ModuleDetail:
            moving = start != Status.REGISTERED
            if moving:
                self.registry.transition(name, Status.UPDATING, actor=actor)
            manifest, row = self.registry.version_info(name, version)
            env = self.layout.env(name, version)
            built = False
            try:
                with ctx.step("check-system"):
                    _require_system(manifest.dependencies.system)
                with ctx.step("carry-config"):
                    stored = self.registry.stored_config(name)
                    config = configs.carry_over(manifest, stored, self.registry.box)
                if row.path is not None and moving:
                    with ctx.step("create-environment"):
                        built = not env_ready(env)  # a kept one (rollback) is reused
                        if built:
                            self._build_env(ctx, manifest, env)
                ctx.checkpoint("before-switch")
                with ctx.step("switch"):
                    detail = self.registry.switch_version(
                        name, version, actor=actor, status=start, config=config, kind=kind
                    )
            except BaseException as exc:
                if built:
                    remove_env(env)
                if moving:
                    self.registry.transition(
                        name,
                        start,
                        actor=actor,
                        error=f"{kind} to {version} failed: {_message(exc)}",
                    )
                else:
                    self.registry.record_error(name, f"{kind} failed: {_message(exc)}")
                raise
            self._prune_envs(
                name,
                keep={
                    detail.version,
                    *([detail.previous_version] if detail.previous_version else []),
                },
            )
            return detail

        return self._run(kind, name, actor, work, version=version, fromStatus=str(start))

    def rollback(self, name: str, *, actor: str) -> Outcome:
        """Return to the version that was active before the last upgrade."""
        previous = self.registry.previous_version(name)
        if previous is None:
            raise Conflict(f"module '{name}' has no previous version to roll back to")
        return self.upgrade(name, previous, actor=actor, kind="rollback")

    # -- removal ---------------------------------------------------------------------------

    def remove(
        self, name: str, *, actor: str, dry_run: bool = False, keep_data: bool = False
    ) -> RemovalPlan | Outcome:
        """Disable, then delete a module's rows, config, files, environments and (unless
        `keep_data`) its store. A removal that fails before its rows go keeps the data."""
        plan = self.registry.delete(name, actor=actor, dry_run=True)
        if dry_run:
            assert plan is not None
            usage = self.store.usage(name)
            data = StoredData(keys=usage.keys, bytes=usage.bytes, kept=keep_data)
            return RemovalPlan(dry_run=True, steps=plan.steps, data=data)

        def work(ctx: Context) -> None:
            if self.registry.get(name).status == Status.ENABLED:
                with ctx.step("disable"):
                    self.registry.set_status(name, Status.DISABLED, actor=actor)
            if self.registry.get(name).status != Status.REMOVING:
                self.registry.transition(name, Status.REMOVING, actor=actor)
            ctx.checkpoint("removing")
            shas = self.bundles.shas_of(name)
            with ctx.step("delete-records"):
                self.registry.delete(name, actor=actor)
            with ctx.step("delete-bundles"):
                self.bundles.delete_unreferenced(shas)
            if keep_data:
                ctx.log(f"kept the module's stored data: {self.store.usage(name).keys} keys")
            else:
                with ctx.step("delete-data"):
                    self.delete_data(name, ctx.log)
            with ctx.step("delete-files"):
                self.delete_files(name)

        return self._run("remove", name, actor, work, keepData=keep_data)

    def delete_data(self, name: str, log: Callable[[str], None]) -> None:
        """Delete every key a module keeps in its store."""
        gone = self.store.drop(name)
        log(f"deleted the module's stored data: {gone.keys} keys, {gone.bytes} bytes")

    def delete_files(self, name: str) -> None:
        """Delete every code folder and environment of a module."""
        remove_tree(self.layout.modules / name)
        remove_tree(self.layout.envs / name)

    # -- helpers ---------------------------------------------------------------------------

    def _prune_envs(self, name: str, keep: set[str]) -> None:
        folder = self.layout.envs / name
        for env in folder.iterdir() if folder.is_dir() else []:
            if env.name not in keep:
                remove_env(env)

    def _run(
        self, kind: str, name: str, actor: str, work: Callable[[Context], T], **detail: Any
    ) -> Outcome:
        handle: Handle[T] = self.operations.start(kind, name, actor, work, **detail)
        done, result = handle.result(self.settings.operation_wait_seconds)
        return done, result, handle.id


def _require_system(requirements: dict[str, str]) -> None:
    problems = check_system(requirements)
    if problems:
        raise Conflict(
            "system requirements not met: " + "; ".join(p["message"] for p in problems),
            errors=[{k: p[k] for k in ("path", "code", "message")} for p in problems],
        )


def _message(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, ModhubError) else str(exc) or type(exc).__name__
