"""Create job configurations, jobs and events

Revision ID: 20cbe131db67
Revises: 5055a65d6b37
Create Date: 2026-11-26 23:54:29.028354
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "20cbe131db67"
down_revision: str | None = "5055a65d6b37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_configurations",
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("step_count", sa.Integer(), nullable=False),
        sa.Column("total_points", sa.BigInteger(), nullable=False),
        sa.Column("total_cost", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_job_configurations_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_configurations")),
        sa.UniqueConstraint("tag", "version", name=op.f("uq_job_configurations_tag_version")),
    )
    op.create_table(
        "job_configuration_steps",
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint("cost >= 0", name=op.f("ck_job_configuration_steps_cost_not_negative")),
        sa.CheckConstraint(
            "points BETWEEN 1 AND 1000000", name=op.f("ck_job_configuration_steps_points_range")
        ),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_job_configuration_steps_configuration_id_job_configurations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_configuration_steps")),
        sa.UniqueConstraint(
            "configuration_id",
            "position",
            name=op.f("uq_job_configuration_steps_configuration_id_position"),
        ),
        sa.UniqueConstraint(
            "configuration_id", "tag", name=op.f("uq_job_configuration_steps_configuration_id_tag")
        ),
    )
    op.create_table(
        "jobs",
        sa.Column("provider_job_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("created_by_id", sa.BigInteger(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "status",
            sa.Enum("pending", "running", "completed", "failed", "cancelled", name="job_status"),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("step_count", sa.Integer(), nullable=False),
        sa.Column("steps_completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_points", sa.BigInteger(), nullable=False),
        sa.Column("completed_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "progress",
            sa.Numeric(),
            sa.Computed("completed_points::numeric / total_points", persisted=True),
            nullable=False,
        ),
        sa.Column("cost", sa.Numeric(precision=18, scale=4), server_default="0", nullable=False),
        sa.Column("event_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unresolved_error_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "completed_points <= total_points", name=op.f("ck_jobs_points_within_total")
        ),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_jobs_configuration_id_job_configurations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_jobs_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_jobs_customer_id_customers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("provider_job_id", name=op.f("uq_jobs_provider_job_id")),
    )
    op.create_index("ix_jobs_configuration_id", "jobs", ["configuration_id"], unique=False)
    op.create_index("ix_jobs_created_at", "jobs", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_jobs_customer_id_created_at", "jobs", ["customer_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_jobs_customer_id_status_created_at",
        "jobs",
        ["customer_id", "status", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_jobs_customer_id_updated_at", "jobs", ["customer_id", "updated_at", "id"], unique=False
    )
    op.create_index("ix_jobs_progress", "jobs", ["progress", "id"], unique=False)
    op.create_index(
        "ix_jobs_provider_job_id_pattern",
        "jobs",
        ["provider_job_id"],
        unique=False,
        postgresql_ops={"provider_job_id": "text_pattern_ops"},
    )
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at", "id"], unique=False)
    op.create_table(
        "events",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Enum("step", "error", "info", name="event_kind"), nullable=False),
        sa.Column("step_id", sa.BigInteger(), nullable=True),
        sa.Column("step_tag", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["job_configuration_steps.id"],
            name=op.f("fk_events_step_id_job_configuration_steps"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_job_id_id", "events", ["job_id", "id"], unique=False)
    op.create_index(
        "ix_events_unresolved_errors",
        "events",
        ["job_id", "step_id"],
        unique=False,
        postgresql_where=sa.text("kind = 'error' AND resolved_at IS NULL"),
    )
    op.create_index("uq_events_job_id_event_id", "events", ["job_id", "event_id"], unique=True)
    op.create_table(
        "job_step_completions",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_job_step_completions_configuration_id_job_configurations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_job_step_completions_customer_id_customers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_step_completions_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["job_configuration_steps.id"],
            name=op.f("fk_job_step_completions_step_id_job_configuration_steps"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("job_id", "step_id", name=op.f("pk_job_step_completions")),
    )
    op.create_index(
        "ix_job_step_completions_completed_at",
        "job_step_completions",
        ["completed_at"],
        unique=False,
    )
    op.create_index(
        "ix_job_step_completions_customer_id_completed_at",
        "job_step_completions",
        ["customer_id", "completed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_job_step_completions_customer_id_completed_at", table_name="job_step_completions"
    )
    op.drop_index("ix_job_step_completions_completed_at", table_name="job_step_completions")
    op.drop_table("job_step_completions")
    op.drop_index("uq_events_job_id_event_id", table_name="events")
    op.drop_index(
        "ix_events_unresolved_errors",
        table_name="events",
        postgresql_where=sa.text("kind = 'error' AND resolved_at IS NULL"),
    )
    op.drop_index("ix_events_job_id_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
    op.drop_index(
        "ix_jobs_provider_job_id_pattern",
        table_name="jobs",
        postgresql_ops={"provider_job_id": "text_pattern_ops"},
    )
    op.drop_index("ix_jobs_progress", table_name="jobs")
    op.drop_index("ix_jobs_customer_id_updated_at", table_name="jobs")
    op.drop_index("ix_jobs_customer_id_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_customer_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_jobs_configuration_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("job_configuration_steps")
    op.drop_table("job_configurations")
    sa.Enum(name="event_kind").drop(op.get_bind())
    sa.Enum(name="job_status").drop(op.get_bind())
