"""job runs: an index of the ready runs, in the order runners claim them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Indexes only: nodes on 0008 keep working beside nodes on 0009. A runner's claim
(status = 'queued', not_before <= now, oldest first, a few dozen rows) read every queued
run and sorted them; with (status, not_before, id) it reads the rows it takes. The index on
status alone goes: the new one starts with it, and each change of a run's status (twice
per run) updated both.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_ready", "job_runs", ["status", "not_before", "id"])
    op.drop_index("ix_job_runs_status", table_name="job_runs")


def downgrade() -> None:
    op.create_index("ix_job_runs_status", "job_runs", ["status"])
    op.drop_index("ix_job_runs_ready", table_name="job_runs")
