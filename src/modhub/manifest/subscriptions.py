"""Rules of `capabilities.events`: what a module emits and what it subscribes to.

A module emits only events it declares (`emits`, each name once, each schema a valid JSON
Schema), and subscribes only to events of the modules it depends on, or to the platform's
own events (`modhub/...`). Whether a dependency declares the event it names is known only
where that dependency's manifest is: a warning when validating on a server, a 409 at enable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsonschema_rs

from modhub.manifest.result import Findings, Location

if TYPE_CHECKING:
    from modhub.manifest.checks import View

EMITS: Location = ("capabilities", "events", "emits")
SUBSCRIBES: Location = ("capabilities", "events", "subscribes")
PLATFORM_SOURCE = "modhub"
PLATFORM_EVENTS = frozenset(
    {
        "module.enabled",
        "module.disabled",
        "module.upgraded",
        "module.config_changed",
        "job.failed",
    }
)


def split_ref(ref: str) -> tuple[str, str]:
    """Split `module/event` into the module and the event name."""
    module, _, name = ref.partition("/")
    return module, name


def check_events(view: View, findings: Findings) -> None:
    """Refuse duplicate or schema-less emits and subscriptions outside the dependencies."""
    names: dict[str, int] = {}
    for i, emitted in view.emits:
        if emitted.name in names:
            findings.error(
                (*EMITS, i, "name"),
                "duplicate_event",
                f"event '{emitted.name}' is already declared by emits/{names[emitted.name]}",
            )
        names.setdefault(emitted.name, i)
        try:
            jsonschema_rs.meta.validate(emitted.schema_)
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            findings.error(
                (*EMITS, i, "schema"),
                "invalid_event_schema",
                f"the payload schema of '{emitted.name}' is not a JSON Schema: "
                f"{getattr(exc, 'message', exc)}",
            )
    seen: dict[str, int] = {}
    depends_on = view.dependencies.get("modules", {})
    for i, subscription in view.subscribes:
        where: Location = (*SUBSCRIBES, i, "event")
        module, name = split_ref(subscription.event)
        if subscription.event in seen:
            findings.error(
                where,
                "duplicate_subscription",
                f"'{subscription.event}' is already subscribed to by "
                f"subscribes/{seen[subscription.event]}",
            )
        seen.setdefault(subscription.event, i)
        if module == PLATFORM_SOURCE:
            if name not in PLATFORM_EVENTS:
                findings.error(
                    where,
                    "unknown_platform_event",
                    f"'{subscription.event}' is not a platform event; the platform emits "
                    + ", ".join(f"modhub/{e}" for e in sorted(PLATFORM_EVENTS)),
                )
        elif module not in depends_on:
            findings.error(
                where,
                "subscription_not_dependency",
                f"'{subscription.event}' is an event of '{module}', which is not in "
                "dependencies.modules: a module subscribes only to its dependencies' events",
            )


def undeclared(view: View, declared: dict[str, set[str]]) -> list[tuple[Location, str]]:
    """Return each subscription naming an event its module does not declare, with why.

    `declared` maps a module to the events its registered manifest emits (a module not in it
    is not known here and is not judged)."""
    found: list[tuple[Location, str]] = []
    for i, subscription in view.subscribes:
        module, name = split_ref(subscription.event)
        if module == PLATFORM_SOURCE or module not in declared or name in declared[module]:
            continue
        found.append(
            (
                (*SUBSCRIBES, i, "event"),
                f"'{module}' does not declare the event '{name}' in capabilities.events.emits",
            )
        )
    return found


def warn_undeclared(view: View, findings: Findings, declared: dict[str, set[str]]) -> None:
    """Warn about subscriptions to events that the named module does not declare."""
    for location, message in undeclared(view, declared):
        findings.warn(location, "undeclared_event", message)
