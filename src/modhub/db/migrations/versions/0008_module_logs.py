"""module log lines: each node's module output in the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

One new table only: nodes on 0007 keep working beside nodes on 0008 (their modules' logs
stay in their memory; docs/cluster.md, "Upgrading modhub in a cluster").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "module_log_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_log_lines")),
    )
    op.create_index("ix_module_log_lines_module_at", "module_log_lines", ["module", "at", "id"])


def downgrade() -> None:
    op.drop_index("ix_module_log_lines_module_at", table_name="module_log_lines")
    op.drop_table("module_log_lines")
