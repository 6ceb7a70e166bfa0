"""Built-in roles added after the first migration, made at start-up where missing.

The migrations made `admin`, `operator` and `viewer`; a built-in role added since (the
`metrics` role of Prometheus's token) is inserted by every start, an insert that does
nothing when the role exists: a role an operator changed keeps its grants.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from modhub.auth.permissions import BUILTIN_ROLES
from modhub.db import Database
from modhub.db.models import Role, RolePermission

DESCRIPTIONS = {"metrics": "Read the Prometheus metrics (GET /metrics)"}


def seed_roles(db: Database) -> list[str]:
    """Create each built-in role that is missing, with its permissions; return those made."""
    with db.read() as session:
        present = set(session.scalars(select(Role.name)))
    missing = [name for name in BUILTIN_ROLES if name not in present]
    if not missing:
        return []
    dialect = postgresql if db.dialect == "postgresql" else sqlite
    made = []
    with db.write() as session:
        for name in missing:
            inserted = session.execute(
                dialect.insert(Role)
                .values(name=name, description=DESCRIPTIONS.get(name, ""), builtin=True)
                .on_conflict_do_nothing(index_elements=[Role.name])
                .returning(Role.name)
            ).first()
            if inserted is None:
                continue  # another node made it first, with its grants
            made.append(name)
            for permission in sorted(BUILTIN_ROLES[name]):
                session.add(RolePermission(role=name, permission=str(permission)))
    return made
