"""Record task runs

Every run of a scheduled task leaves a row in `task_runs` (task, start, end, outcome, the counts
it returned, the error of a failed run), which the system status reads by task and outcome and
the `auth_cleanup` task deletes past TASK_RUN_RETENTION_DAYS. Two partial indexes let the status
read the webhook backlog without a scan: the pending deliveries by age, the endpoints delivery
disabled.

Revision ID: c8e5d1a7f3b2
Revises: c3e9f1a7d254
Create Date: 2026-12-07 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c8e5d1a7f3b2"
down_revision: str | None = "c3e9f1a7d254"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_runs",
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum("succeeded", "failed", name="task_outcome"),
            nullable=False,
        ),
        sa.Column(
            "counts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.String(length=2000), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
    )
    op.create_index(
        "ix_task_runs_task_outcome_started_at",
        "task_runs",
        ["task", "outcome", "started_at"],
        unique=False,
    )
    op.create_index(op.f("ix_task_runs_started_at"), "task_runs", ["started_at"], unique=False)
    op.create_index(
        "ix_webhook_deliveries_created_at_pending",
        "webhook_deliveries",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_endpoints_disabled",
        "webhook_endpoints",
        ["id"],
        unique=False,
        postgresql_where=sa.text("disabled_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_endpoints_disabled",
        table_name="webhook_endpoints",
        postgresql_where=sa.text("disabled_at IS NOT NULL"),
    )
    op.drop_index(
        "ix_webhook_deliveries_created_at_pending",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index(op.f("ix_task_runs_started_at"), table_name="task_runs")
    op.drop_index("ix_task_runs_task_outcome_started_at", table_name="task_runs")
    op.drop_table("task_runs")
    sa.Enum(name="task_outcome").drop(op.get_bind(), checkfirst=False)
