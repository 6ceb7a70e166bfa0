"""Event subscriptions against the registry: does each module a manifest subscribes to
declare the event it names? A warning at validation, a refusal (409) at enable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modhub.db.models import Module, ModuleVersion
from modhub.errors import Conflict
from modhub.manifest import Manifest
from modhub.manifest.checks import View
from modhub.manifest.result import Issue, ValidationResult, pointer
from modhub.manifest.subscriptions import PLATFORM_SOURCE, split_ref, undeclared


def declared_events(session: Session, modules: set[str]) -> dict[str, set[str]]:
    """Return the events each registered module of `modules` emits (its active version)."""
    if not modules:
        return {}
    rows = session.execute(
        select(Module.name, ModuleVersion.manifest)
        .join(
            ModuleVersion,
            (ModuleVersion.module_id == Module.id) & (ModuleVersion.version == Module.version),
        )
        .where(Module.name.in_(sorted(modules)))
    ).all()
    found: dict[str, set[str]] = {}
    for name, manifest in rows:
        events = ((manifest.get("capabilities") or {}).get("events") or {}).get("emits") or []
        found[name] = {str(e.get("name")) for e in events if isinstance(e, dict)}
    return found


def _sources(manifest: Manifest) -> set[str]:
    return {
        split_ref(s.event)[0]
        for s in manifest.capabilities.events.subscribes
        if split_ref(s.event)[0] != PLATFORM_SOURCE
    }


def warn_undeclared(session: Session, data: Any, result: ValidationResult) -> ValidationResult:
    """Return `result` with a warning for each subscription to an undeclared event."""
    if not result.valid:
        return result
    manifest = Manifest.model_validate(data)
    declared = declared_events(session, _sources(manifest))
    warnings = [
        Issue(path=pointer(where), code="undeclared_event", message=message, severity="warning")
        for where, message in undeclared(View.of(manifest), declared)
    ]
    if not warnings:
        return result
    return ValidationResult(errors=result.errors, warnings=[*result.warnings, *warnings])


def refuse_undeclared(session: Session, manifest: Manifest) -> None:
    """Refuse to enable a module subscribed to an event its source does not declare."""
    declared = declared_events(session, _sources(manifest))
    problems = undeclared(View.of(manifest), declared)
    if problems:
        raise Conflict(
            f"cannot enable '{manifest.name}': " + "; ".join(m for _, m in problems),
            module=manifest.name,
            errors=[
                {"path": pointer(where), "code": "undeclared_event", "message": message}
                for where, message in problems
            ],
        )
