"""Migration 0004: job run owners and runner leases, from a database that holds runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import inspect, text

from modhub.db import Database, upgrade
from modhub.db.migrate import alembic_config
from modhub.jobs.store import RunStore

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def insert_run(db: Database, job: str, status: str) -> None:
    """Insert a run as a server at revision 0003 did (no owner column)."""
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO job_runs (module, job, version, trigger, scheduled_at, not_before,"
                " attempt, status, log, created_at) VALUES ('m', :job, '1.0.0', 'manual',"
                " :now, :now, 1, :status, '', :now)"
            ),
            {"job": job, "now": NOW, "status": status},
        )


def statuses(db: Database) -> dict[str, tuple[str, str | None]]:
    with db.engine.connect() as connection:
        return {
            job: (status, error)
            for job, status, error in connection.execute(
                text("SELECT job, status, error FROM job_runs")
            )
        }


def test_0004_adds_owners_and_leases_and_keeps_the_runs(db: Database) -> None:
    upgrade(db.engine, "0003")
    insert_run(db, "was-running", "running")
    insert_run(db, "done", "succeeded")

    upgrade(db.engine)

    tables = inspect(db.engine)
    assert "job_runners" in tables.get_table_names()
    assert "owner" in {c["name"] for c in tables.get_columns("job_runs")}
    with db.engine.connect() as connection:
        owners = connection.execute(text("SELECT owner FROM job_runs")).scalars().all()
    assert owners == [None, None]
    # A run left running by a server from before owners has none: the first runner fails it.
    assert RunStore(db).interrupt_running(NOW, "first-runner", timedelta(seconds=30)) == 1
    assert statuses(db) == {
        "was-running": ("failed", "interrupted: the server stopped"),
        "done": ("succeeded", None),
    }


def test_0004_downgrades_and_upgrades_again(db: Database) -> None:
    upgrade(db.engine)
    insert_run(db, "kept", "queued")

    command.downgrade(alembic_config(db.engine), "0003")

    tables = inspect(db.engine)
    assert "job_runners" not in tables.get_table_names()
    assert "owner" not in {c["name"] for c in tables.get_columns("job_runs")}
    assert statuses(db) == {"kept": ("queued", None)}
    upgrade(db.engine)
    assert "job_runners" in inspect(db.engine).get_table_names()
    assert statuses(db) == {"kept": ("queued", None)}
