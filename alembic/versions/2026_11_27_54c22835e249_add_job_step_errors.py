"""Add job step errors

Revision ID: 54c22835e249
Revises: 20cbe131db67
Create Date: 2026-11-27 00:28:14.679184
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "54c22835e249"
down_revision: str | None = "20cbe131db67"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_step_errors",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("first_error_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_job_step_errors_configuration_id_job_configurations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_job_step_errors_customer_id_customers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_step_errors_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["job_configuration_steps.id"],
            name=op.f("fk_job_step_errors_step_id_job_configuration_steps"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("job_id", "step_id", name=op.f("pk_job_step_errors")),
    )
    op.create_index(
        "ix_job_step_errors_configuration_id_customer_id",
        "job_step_errors",
        ["configuration_id", "customer_id"],
        unique=False,
    )
    # CONCURRENTLY (outside the migration's transaction): jobs is large and scripts keep writing.
    # The new index serves what the old one did (the foreign key), and the steps analytics.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_configuration_id_created_at",
            "jobs",
            ["configuration_id", "created_at"],
            postgresql_concurrently=True,
        )
        op.drop_index("ix_jobs_configuration_id", table_name="jobs", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_configuration_id", "jobs", ["configuration_id"], postgresql_concurrently=True
        )
        op.drop_index(
            "ix_jobs_configuration_id_created_at", table_name="jobs", postgresql_concurrently=True
        )
    op.drop_index("ix_job_step_errors_configuration_id_customer_id", table_name="job_step_errors")
    op.drop_table("job_step_errors")
