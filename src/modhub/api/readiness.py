"""`GET /readyz`: whether this node can serve — its database answers, the schema is at
the newest migration, and the database was set up with this node's secret key.

`/healthz` stays liveness (the process and its database are up); a balancer or an
orchestrator takes a node that is not ready out of rotation without restarting it.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass

from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from modhub.cluster.keycheck import CHECK_KEY
from modhub.db import Database
from modhub.db.migrate import alembic_config
from modhub.db.models import ClusterMeta

CHECKS = ("database", "migrations", "secretKey")


@dataclass(frozen=True)
class Readiness:
    """Each check's result: None when it passed, else why it failed."""

    failures: dict[str, str]

    @property
    def ready(self) -> bool:
        """Return whether every check passed."""
        return not self.failures

    def checks(self) -> dict[str, str]:
        """Return every check's result: `ok`, why it failed, or `not checked` (the checks
        run in order and stop at the first failure)."""
        out, failed = {}, False
        for name in CHECKS:
            out[name] = self.failures.get(name, "not checked" if failed else "ok")
            failed = failed or name in self.failures
        return out


@functools.cache
def head_revision() -> str | None:
    """Return the newest migration of this modhub version (read once)."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")  # the config wants an engine; the scripts are files
    try:
        return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    finally:
        engine.dispose()


def check(db: Database, key_check: str) -> Readiness:
    """Run the checks in order (blocking); `key_check` is this node's `check_value`."""
    try:
        with db.query() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return Readiness({"database": f"the database does not answer: {_reason(exc)}"})
    current: str | None = None
    detail: str | None = None
    try:
        with db.query() as connection:
            current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # no alembic_version table: never migrated
        detail = _reason(exc)
    head = head_revision()
    if current != head:
        found = f"at revision {current}" if current else f"not migrated ({detail or 'no revision'})"
        return Readiness(
            {"migrations": f"the database schema is {found}, not {head}: run `modhub db upgrade`"}
        )
    with db.query() as connection:
        stored = connection.execute(
            select(ClusterMeta.value).where(ClusterMeta.key == CHECK_KEY)
        ).scalar()
    if stored is None:
        return Readiness({"secretKey": "the database holds no secret key check value"})
    if not hmac.compare_digest(stored.encode(), key_check.encode()):
        return Readiness(
            {
                "secretKey": "this node's MODHUB_SECRET_KEY differs from the one the "
                "database was set up with"
            }
        )
    return Readiness({})


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
