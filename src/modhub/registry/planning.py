"""Plans for enabling and disabling along the dependency graph."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from modhub.db.models import Module
from modhub.errors import Conflict
from modhub.registry import config as configs
from modhub.registry.rows import active_manifest, dependents, find_module, refuse_busy, unmet
from modhub.registry.status import Status
from modhub.registry.types import PlanStep


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
