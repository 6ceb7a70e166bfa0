"""Migrations: an empty database is migrated to the models, and SQLite is set up right."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from modhub.db import Database, upgrade
from modhub.db.migrate import is_current
from modhub.db.models import Base, Role, RolePermission, User
from modhub.services import Services

# What the registry and auth need at least; later migrations add more (all in the models).
TABLES = {
    "modules",
    "module_versions",
    "module_dependencies",
    "roles",
    "role_permissions",
    "users",
    "api_tokens",
    "login_throttle",
    "audit_log",
}


def test_empty_database_has_no_tables(db: Database) -> None:
    assert inspect(db.engine).get_table_names() == []


def test_upgrade_creates_every_table(db: Database) -> None:
    upgrade(db.engine)

    tables = set(inspect(db.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert tables >= TABLES


def test_upgrade_seeds_the_builtin_roles(db: Database) -> None:
    upgrade(db.engine)

    with db.read() as session:
        roles = {r.name: r.builtin for r in session.scalars(select(Role))}
        grants = {(g.role, g.permission) for g in session.scalars(select(RolePermission))}
    assert roles == {"admin": True, "operator": True, "viewer": True}
    assert grants == {
        ("admin", "*"),
        ("operator", "modules:read"),
        ("operator", "modules:write"),
        ("viewer", "modules:read"),
    }


def test_upgrade_twice_changes_nothing(db: Database) -> None:
    upgrade(db.engine)
    upgrade(db.engine)

    with db.read() as session:
        assert len(session.scalars(select(Role)).all()) == 3


def test_models_and_migrations_agree(db: Database) -> None:
    upgrade(db.engine)

    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_is_current_only_after_upgrade(db: Database) -> None:
    assert is_current(db.engine) is False

    upgrade(db.engine)

    assert is_current(db.engine) is True


def test_services_start_on_a_migrated_database(services: Services) -> None:
    assert is_current(services.db.engine)
    assert set(inspect(services.db.engine).get_table_names()) >= TABLES


def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'modhub.db'}")
    try:
        for _ in range(2):  # every pooled connection, not only the first
            with db.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        upgrade(db.engine)
        with db.read() as session:
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        with db.write() as session:
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.dispose()


def test_foreign_keys_are_enforced(db: Database) -> None:
    upgrade(db.engine)

    with pytest.raises(IntegrityError), db.write() as session:
        session.add(User(username="ghost", role="no-such-role", password_hash="x"))
    with db.read() as session:
        assert session.scalars(select(User)).all() == []
