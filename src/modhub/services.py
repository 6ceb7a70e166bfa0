"""The platform's services, wired once from the settings (used by the API and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from modhub.auth import AuthService
from modhub.db import Database
from modhub.db.migrate import is_current, upgrade
from modhub.errors import ConfigurationError
from modhub.keys import SecretBox
from modhub.lifecycle import Lifecycle, Operations, recover
from modhub.registry import Registry
from modhub.settings import Settings


@dataclass
class Services:
    """Settings, database, auth, registry and lifecycle of one modhub process."""

    settings: Settings
    db: Database
    auth: AuthService
    registry: Registry
    operations: Operations
    lifecycle: Lifecycle
    recovered: list[str]

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
        registry = Registry(db, SecretBox(secret))
        operations = Operations(db, failpoint=settings.failpoint)
        lifecycle = Lifecycle(registry, operations, settings)
        return cls(
            settings=settings,
            db=db,
            auth=AuthService(db, settings),
            registry=registry,
            operations=operations,
            lifecycle=lifecycle,
            recovered=recover(lifecycle),
        )

    def close(self) -> None:
        """Stop background operations and release the database connections."""
        self.operations.shutdown()
        self.db.dispose()
