"""job runs: an index of the ready runs, in the order runners claim them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

One new index only: nodes on 0008 keep working beside nodes on 0009. A runner's claim
(status = 'queued', not_before <= now, oldest first, a few dozen rows) read every queued
run and sorted them; with (status, not_before, id) it reads the rows it takes.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_ready", "job_runs", ["status", "not_before", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_ready", table_name="job_runs")
