"""event seqs: each source's last event seq, kept in a row of its own; two indexes fewer

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

One new table, filled from the events there are. Rolling: nodes on 0009 keep numbering a
source's events by `max(seq) + 1` under the source's advisory lock and ignore this table;
nodes on 0010 take the same lock and number by the greater of this row and `max(seq)`, and
number again when an old node's event took theirs (events/store.py). An emit on 0010 is
then one statement: the row's lock orders one source's emits without a round trip of its
own.

Two indexes go, each the leading column of a unique one that serves its reads:
`ix_events_source` (of `(source, seq)`; `max(seq)` of a source read every event of it
through this one) and `ix_event_deliveries_event_id` (of `(event_id, subscriber)`). No
code names an index, so this part is rolling too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_seqs",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.execute(
        "INSERT INTO event_seqs (source, seq) SELECT source, max(seq) FROM events GROUP BY source"
    )
    op.drop_index("ix_events_source", table_name="events")
    op.drop_index("ix_event_deliveries_event_id", table_name="event_deliveries")


def downgrade() -> None:
    op.create_index("ix_event_deliveries_event_id", "event_deliveries", ["event_id"])
    op.create_index("ix_events_source", "events", ["source"])
    op.drop_table("event_seqs")
