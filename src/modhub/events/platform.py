"""The platform's own events (`modhub/...`), emitted in the transaction of the change.

The registry tells its observers of every status, version and config change with the
change's audit action; these become `modhub/module.enabled`, `module.disabled`,
`module.upgraded` and `module.config_changed`, stored (with a delivery per subscriber)
in the same transaction, so an event exists exactly when its change committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from modhub.events.service import EventService
from modhub.manifest.subscriptions import PLATFORM_SOURCE
from modhub.registry import Status


def platform_event(
    action: str, module: str, detail: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """Return the platform event (name, payload) of a registry change, or None."""
    if action == "module.status":
        before, after = detail.get("from"), detail.get("to")
        if after == Status.ENABLED and before != Status.UPDATING:  # not an upgrade's return
            return "module.enabled", {"module": module, "from": before}
        if after == Status.DISABLED and before == Status.ENABLED:
            return "module.disabled", {"module": module, "from": before}
        return None
    if action in ("module.upgrade", "module.rollback"):
        return "module.upgraded", {
            "module": module,
            "from": detail.get("from"),
            "to": detail.get("to"),
            "kind": action.removeprefix("module."),
        }
    if action == "module.config":
        return "module.config_changed", {
            "module": module,
            "changed": list(detail.get("changed", [])),
        }
    return None


class PlatformEvents:
    """A registry observer that emits the platform's events (see the module docstring)."""

    def __init__(self, service: EventService) -> None:
        self.service = service

    def __call__(self, session: Session, action: str, module: str, detail: dict[str, Any]) -> None:
        found = platform_event(action, module, detail)
        if found is None:
            return
        name, payload = found
        ref = f"{PLATFORM_SOURCE}/{name}"
        subscribers = [s.module for s in self.service.catalogs.current().subscribers.get(ref, [])]
        self.service.store.publish(
            session, PLATFORM_SOURCE, name, payload, subscribers, self.service.clock()
        )
        if subscribers:
            for wake in self.service.listeners:
                wake()
