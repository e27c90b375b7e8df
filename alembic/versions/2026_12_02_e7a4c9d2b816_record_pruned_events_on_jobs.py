"""Record pruned events on jobs

The retention policy (`EVENT_RETENTION_DAYS`, the `prune_events` task) deletes old raw events;
each job records how many of its events went and the cutoff of the latest run that deleted any,
so that its event list can say it is incomplete. Both columns are added without a table rewrite
(a constant default), and no index covers them, so the updates that change them can be HOT.

Revision ID: e7a4c9d2b816
Revises: d5e8b2c4a1f3
Create Date: 2026-12-02 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7a4c9d2b816"
down_revision: str | None = "d5e8b2c4a1f3"
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


def downgrade() -> None:
    op.drop_column("jobs", "events_pruned_before")
    op.drop_column("jobs", "events_pruned_count")
