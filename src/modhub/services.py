"""The platform's services, wired once from the settings (used by the API and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from modhub.auth import AuthService
from modhub.db import Database
from modhub.db.migrate import is_current, upgrade
from modhub.errors import ConfigurationError
from modhub.keys import SecretBox
from modhub.registry import Registry
from modhub.settings import Settings


@dataclass
class Services:
    """Settings, database, auth and registry of one modhub process."""

    settings: Settings
    db: Database
    auth: AuthService
    registry: Registry

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Open the database (migrating the embedded one) and build the services."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.db_url)
        if settings.embedded:
            upgrade(db.engine)
        elif not is_current(db.engine):
            db.dispose()
            raise ConfigurationError(
                "the database schema is not up to date: run `modhub db upgrade` first"
            )
        secret = settings.resolved_secret_key()
        return cls(
            settings=settings,
            db=db,
            auth=AuthService(db, settings),
            registry=Registry(db, SecretBox(secret)),
        )

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()
