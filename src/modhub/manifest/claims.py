"""What a manifest may claim on a server: its own permissions, installable requirements.

These rules run after the models and the cross-field checks (`checks.py`), on the same
`View`, so a manifest with shape errors still has them reported.
"""

from __future__ import annotations

from modhub.manifest import formats
from modhub.manifest.checks import View
from modhub.manifest.result import Findings

# Scopes the platform's own permissions use or will use (`modules:read`, `users:admin`, ...):
# no module may declare a permission in them, whatever its name.
RESERVED_SCOPES = frozenset(
    {
        "modules",
        "users",
        "roles",
        "tokens",
        "jobs",
        "system",
        "audit",
        "auth",
        "admin",
        "modhub",
        "metrics",
        "events",
    }
)


def own_scopes(name: str) -> frozenset[str]:
    """Return the permission scopes module `name` may declare: its name, and the family
    prefix before its first '-' (`vmware` for `vmware-vcenter`), less the reserved ones."""
    return frozenset({name, name.split("-", 1)[0]}) - RESERVED_SCOPES


def check_permission_scopes(view: View, findings: Findings) -> None:
    """Refuse declared permissions outside the module's own namespace."""
    name = view.name if view.name and formats.MODULE_NAME.fullmatch(view.name) else None
    allowed = own_scopes(name) if name else frozenset()
    for i, permission in view.permissions:
        scope = permission.split(":", 1)[0]
        if scope in RESERVED_SCOPES:
            message = (
                f"permission '{permission}' is in the platform's reserved scope '{scope}'; "
                "a module declares only its own permissions"
            )
        elif name is None or scope in allowed:
            continue  # without a valid name the namespace is unknown: `name` is the error
        else:
            message = (
                f"permission '{permission}' is outside module '{name}''s namespace; use "
                + " or ".join(f"'{s}:…'" for s in sorted(allowed))
            )
        findings.error(("permissions", i), "foreign_permission", message)


def check_requirements(
    view: View, findings: Findings, *, allow_direct_references: bool = False
) -> None:
    """Refuse Python requirements the server must not install (local paths, file: URLs,
    and URL or VCS references unless the operator allows them)."""
    for i, text in view.requirements:
        if formats.requirement_syntax_problem(text) is not None:
            continue  # reported as invalid_requirement by the models
        issue = formats.requirement_issue(text, allow_direct_references=allow_direct_references)
        if issue is not None:
            code, reason = issue
            findings.error(("dependencies", "python", i), code, f"'{text}': {reason}")
