"""Record pruned events on jobs

The retention policy (`EVENT_RETENTION_DAYS`, the `prune_events` task) deletes old raw events;
each job records how many of its events went and the cutoff of the latest run that deleted any,
so that its event list can say it is incomplete. Both columns are added without a table rewrite
(a constant default), and no index covers them, so the updates that change them can be HOT.

Pruning deletes a steady stream of the oldest events: autovacuum is asked to reclaim them once
2% of the table is dead instead of PostgreSQL's 20% (at a year's retention, about a week of
pruning instead of ten weeks), so that new events reuse the space rather than grow the table.

Revision ID: e7a4c9d2b816
Revises: e7f1a2b3c4d5
Create Date: 2026-12-02 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7a4c9d2b816"
down_revision: str | None = "e7f1a2b3c4d5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("events_pruned_count", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "jobs", sa.Column("events_pruned_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02)")


def downgrade() -> None:
    op.execute("ALTER TABLE events RESET (autovacuum_vacuum_scale_factor)")
    op.drop_column("jobs", "events_pruned_before")
    op.drop_column("jobs", "events_pruned_count")
