"""Add billing indexes on jobs

Revision ID: f40c6a5ac121
Revises: 54c22835e249
Create Date: 2026-11-27 00:35:32.734591
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f40c6a5ac121"
down_revision: str | None = "54c22835e249"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Partial: rows of running jobs, which take most updates, are in none of them.
INDEXES = (
    (
        "ix_jobs_completed_at_customer_id",
        ["completed_at", "customer_id"],
        "completed_at IS NOT NULL",
    ),
    (
        "ix_jobs_customer_id_completed_at",
        ["customer_id", "completed_at"],
        "completed_at IS NOT NULL",
    ),
    (
        "ix_jobs_last_event_at_customer_id_failed",
        ["last_event_at", "customer_id"],
        "status = 'failed'",
    ),
)


def upgrade() -> None:
    # CONCURRENTLY (outside the migration's transaction): jobs is large and scripts keep writing.
    with op.get_context().autocommit_block():
        for name, columns, where in INDEXES:
            op.create_index(
                name,
                "jobs",
                columns,
                postgresql_where=sa.text(where),
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name="jobs", postgresql_concurrently=True)
