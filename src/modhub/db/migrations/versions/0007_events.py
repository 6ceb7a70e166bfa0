"""events: emitted events and their deliveries to subscribing modules

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Only new tables: nodes on 0006 keep working beside nodes on 0007.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("source", "seq", name=op.f("uq_events_source")),
    )
    with op.batch_alter_table("events") as batch:
        batch.create_index(batch.f("ix_events_source"), ["source"], unique=False)
        batch.create_index(batch.f("ix_events_name"), ["name"], unique=False)
        batch.create_index(batch.f("ix_events_emitted_at"), ["emitted_at"], unique=False)
    op.create_table(
        "event_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("subscriber", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_event_deliveries_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_deliveries")),
        sa.UniqueConstraint("event_id", "subscriber", name=op.f("uq_event_deliveries_event_id")),
    )
    with op.batch_alter_table("event_deliveries") as batch:
        batch.create_index(batch.f("ix_event_deliveries_event_id"), ["event_id"], unique=False)
        batch.create_index(batch.f("ix_event_deliveries_subscriber"), ["subscriber"], unique=False)
        batch.create_index(batch.f("ix_event_deliveries_status"), ["status"], unique=False)
        batch.create_index(
            batch.f("ix_event_deliveries_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("event_deliveries")
    op.drop_table("events")
