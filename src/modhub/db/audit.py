"""The audit log: every change, who made it and when. Callers never pass secret values."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from modhub.db.models import AuditEntry

SYSTEM = "system"


def record(
    session: Session, actor: str, action: str, target: str | None = None, **detail: Any
) -> None:
    """Add an audit entry to the session's transaction."""
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))
