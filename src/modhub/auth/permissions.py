"""Platform permissions, built-in roles, and who is calling."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PERMISSION_FORM = re.compile(r"\*|[a-z][a-z0-9_-]*:[a-z*][a-z0-9_*-]*")
ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{1,63}")


class Permission(StrEnum):
    """Permissions the platform itself checks."""

    MODULES_READ = "modules:read"
    MODULES_WRITE = "modules:write"
    MODULES_ADMIN = "modules:admin"
    USERS_ADMIN = "users:admin"
    METRICS_READ = "metrics:read"


BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({Permission.MODULES_READ}),
    "operator": frozenset({Permission.MODULES_READ, Permission.MODULES_WRITE}),
    "admin": frozenset({"*"}),
    "metrics": frozenset({Permission.METRICS_READ}),  # Prometheus's own token
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, its role and that role's permissions."""

    username: str
    role: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        """Return whether the caller holds `permission` (directly, by `scope:*` or `*`)."""
        if "*" in self.permissions or permission in self.permissions:
            return True
        scope = permission.split(":", 1)[0]
        return f"{scope}:*" in self.permissions
