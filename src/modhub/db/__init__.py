"""Persistence: SQLAlchemy models, sessions and Alembic migrations."""

from modhub.db.database import Database
from modhub.db.migrate import upgrade

__all__ = ["Database", "upgrade"]
