"""Plans for enabling and disabling along the dependency graph, and for upgrades."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from modhub.db.models import Module
from modhub.errors import Conflict
from modhub.keys import SecretBox
from modhub.manifest import Manifest
from modhub.registry import config as configs
from modhub.registry.rows import active_manifest, dependents, find_module, refuse_busy, unmet
from modhub.registry.status import Status
from modhub.registry.types import ConfigNote, PlanStep, UpgradePlan


def enable_plan(session: Session, module: Module, cascade: bool) -> list[tuple[Module, PlanStep]]:
    """Return the modules to enable, dependencies first; Conflict naming what is unmet."""
    plan: list[tuple[Module, PlanStep]] = []
    unmet_deps: list[dict[str, str]] = []
    unconfigured: list[dict[str, Any]] = []
    visiting: set[str] = set()

    def visit(row: Module) -> None:
        if row.name in visiting or any(m is row for m, _ in plan):
            return
        visiting.add(row.name)
        for dep in row.dependencies:
            other = find_module(session, dep.depends_on, lock=True, missing_ok=True)
            reason = unmet(dep, other)
            if other is not None and reason is None and other.status != Status.ENABLED:
                if cascade:
                    visit(other)
                    continue
                reason = f"is {other.status}, not ENABLED (use ?cascade=true)"
            if reason:
                unmet_deps.append(
                    {
                        "module": row.name,
                        "dependency": dep.depends_on,
                        "range": dep.version_range,
                        "reason": reason,
                    }
                )
        refuse_busy(row)
        missing = configs.missing_required(active_manifest(session, row), row.config)
        if missing:
            unconfigured.append({"module": row.name, "keys": missing})
        if row.status != Status.ENABLED:
            plan.append(
                (row, PlanStep(module=row.name, from_=Status(row.status), to=Status.ENABLED))
            )

    visit(module)
    if unmet_deps or unconfigured:
        reasons = [f"{u['dependency']} {u['reason']}" for u in unmet_deps] + [
            f"{c['module']} needs config {', '.join(c['keys'])}" for c in unconfigured
        ]
        raise Conflict(
            f"cannot enable '{module.name}': " + "; ".join(reasons),
            unmet=unmet_deps,
            missingConfig=unconfigured,
        )
    return plan


def disable_plan(session: Session, module: Module, cascade: bool) -> list[tuple[Module, PlanStep]]:
    """Return the modules to disable, dependents first; Conflict naming enabled ones."""
    plan: list[tuple[Module, PlanStep]] = []
    blocking: list[str] = []
    seen: set[str] = set()

    def visit(row: Module) -> None:
        if row.name in seen:
            return
        seen.add(row.name)
        for dependent in dependents(session, row.name, lock=True):
            if dependent.status == Status.ENABLED:
                if cascade:
                    visit(dependent)
                else:
                    blocking.append(dependent.name)
        refuse_busy(row)
        if row.status != Status.DISABLED:
            plan.append(
                (row, PlanStep(module=row.name, from_=Status(row.status), to=Status.DISABLED))
            )

    visit(module)
    if blocking:
        raise Conflict(
            f"cannot disable '{module.name}': enabled dependents {', '.join(blocking)} "
            "(use ?cascade=true to disable them first)",
            dependents=blocking,
        )
    return plan


def upgrade_plan(module: Module, version: str, box: SecretBox) -> UpgradePlan:
    """Return what an upgrade to `version` does to the config; InvalidInput if it would fail."""
    row = next(v for v in module.versions if v.version == version)
    manifest = Manifest.model_validate(row.manifest)
    stored = dict(module.config)
    new = configs.carry_over(manifest, stored, box)
    fields = manifest.config.schema_
    held = configs.held_sealed(manifest, stored)
    notes: list[ConfigNote] = []
    for key in sorted(set(stored) | set(new)):
        if key not in new:
            if key in stored:
                notes.append(ConfigNote(key=key, change="removed", message=f"'{key}' is dropped"))
        elif key not in stored:
            notes.append(ConfigNote(key=key, change="added", message=f"'{key}' takes its default"))
        elif key in held:
            notes.append(
                ConfigNote(
                    key=key,
                    change="stays-sealed",
                    message=f"'{key}' is no longer a secret in {version}, but its stored value "
                    "stays sealed and masked until an operator sets it again",
                )
            )
        elif fields[key].secret and not configs.is_sealed(stored[key]):
            notes.append(
                ConfigNote(key=key, change="sealed", message=f"'{key}' becomes a secret: sealed")
            )
    return UpgradePlan(
        dry_run=True, module=module.name, from_=module.version, to=version, config=notes
    )
