"""Module statuses and the transitions between them, enforced in this one place."""

from __future__ import annotations

from enum import StrEnum

from modhub.errors import Conflict


class Status(StrEnum):
    """Where a module is in its life."""

    REGISTERED = "REGISTERED"
    INSTALLING = "INSTALLING"
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    UPDATING = "UPDATING"
    REMOVING = "REMOVING"


STABLE = frozenset({Status.REGISTERED, Status.ENABLED, Status.DISABLED})
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.REGISTERED: frozenset({Status.INSTALLING, Status.REMOVING}),
    Status.INSTALLING: frozenset({Status.DISABLED, Status.REGISTERED}),
    Status.DISABLED: frozenset({Status.ENABLED, Status.UPDATING, Status.REMOVING}),
    Status.ENABLED: frozenset({Status.DISABLED, Status.UPDATING, Status.REMOVING}),
    Status.UPDATING: frozenset({Status.ENABLED, Status.DISABLED}),
    Status.REMOVING: frozenset({Status.REGISTERED, Status.ENABLED, Status.DISABLED}),
}


def check_transition(module: str, current: str, target: Status) -> None:
    """Raise Conflict unless a module may go from `current` to `target`."""
    if target not in TRANSITIONS[Status(current)]:
        raise Conflict(
            f"module '{module}' cannot go from {current} to {target}",
            module=module,
            current=current,
            target=str(target),
        )


def path_to(current: Status, target: Status) -> list[Status]:
    """Return the statuses a module passes through from `current` to `target` (ENABLED or
    DISABLED): a REGISTERED module is installed on the way."""
    if current == target:
        return []
    if current == Status.REGISTERED:
        steps = [Status.INSTALLING, Status.DISABLED]
        return steps + ([Status.ENABLED] if target == Status.ENABLED else [])
    return [target]
