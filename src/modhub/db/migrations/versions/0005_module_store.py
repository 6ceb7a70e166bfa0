"""module store

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEY = sa.String(length=512).with_variant(sa.String(length=512, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "module_store",
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("module", "key", name=op.f("pk_module_store")),
    )
    op.create_index(
        op.f("ix_module_store_expires_at"), "module_store", ["expires_at"], unique=False
    )
    op.create_table(
        "module_store_usage",
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("keys", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("module", name=op.f("pk_module_store_usage")),
    )


def downgrade() -> None:
    op.drop_table("module_store_usage")
    op.drop_index(op.f("ix_module_store_expires_at"), table_name="module_store")
    op.drop_table("module_store")
