"""What a backup reads from the database snapshot it takes, in that same snapshot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Facts:
    """The snapshot's Alembic revision, secret key check value, and the versions that have
    code (a path) but no bundle in the database (installed before bundles were stored)."""

    revision: str | None
    key_check: str | None
    unbundled: list[tuple[str, str]]
