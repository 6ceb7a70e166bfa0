"""cluster: nodes, the secret key's check value, bundles in the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Only new tables and one nullable column: nodes on 0005 keep working beside nodes on 0006
(docs/cluster.md, "Upgrading modhub in a cluster").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_cluster_meta")),
    )
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column("modhub_version", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_nodes")),
    )
    op.create_table(
        "bundles",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_bundles")),
    )
    op.create_table(
        "bundle_chunks",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["bundles.sha256"],
            name=op.f("fk_bundle_chunks_sha256_bundles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sha256", "seq", name=op.f("pk_bundle_chunks")),
    )
    with op.batch_alter_table("module_versions") as batch:
        batch.add_column(sa.Column("bundle_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("module_versions") as batch:
        batch.drop_column("bundle_sha256")
    op.drop_table("bundle_chunks")
    op.drop_table("bundles")
    op.drop_table("cluster_nodes")
    op.drop_table("cluster_meta")
