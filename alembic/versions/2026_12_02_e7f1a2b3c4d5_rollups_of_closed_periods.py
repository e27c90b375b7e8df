"""Rollups of closed periods

Usage per quarter hour, customer and configuration version; the steps funnel per configuration
version, day or month of job creation, and customer (or all of them); `rollup_state`, how far
they reach; and the marks that tell reads and the roll-up task which closed periods changed.

Triggers mark, in the writer's transaction, every change to what a rollup counts that falls
before `closed_until`: on jobs (creation and completion times), job_step_completions and
job_step_errors. They are statement triggers with transition tables, so a batch of events or a
bulk insert marks once per statement, except the one on updates of jobs: every event updates its
job, and a row trigger with a WHEN clause costs nothing unless the times it names change.

Revision ID: e7f1a2b3c4d5
Revises: d5e8b2c4a1f3
Create Date: 2026-12-02 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7f1a2b3c4d5"
down_revision: str | None = "d5e8b2c4a1f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 4)

FUNCTIONS = r"""
-- The quarter hour (UTC) that holds a moment: the grain of the usage rollups.
CREATE FUNCTION rollup_bucket(at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- The marks for changed rows of jobs (`changed`: their old or new versions): the quarter hours
-- of their creation and completion, the days of their creation, when closed.
CREATE FUNCTION mark_rollups_of_jobs(changed jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    closed timestamptz := (SELECT closed_until FROM rollup_state);
BEGIN
    IF closed IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO usage_rollup_marks (bucket_at)
    SELECT DISTINCT rollup_bucket(t.at)
    FROM jsonb_to_recordset(changed) AS j(created_at timestamptz, completed_at timestamptz),
        LATERAL (VALUES (j.created_at), (j.completed_at)) AS t(at)
    WHERE t.at < closed;
    INSERT INTO funnel_rollup_marks (configuration_id, day)
    SELECT DISTINCT j.configuration_id, date_trunc('day', j.created_at, 'UTC')
    FROM jsonb_to_recordset(changed) AS j(configuration_id bigint, created_at timestamptz)
    WHERE j.created_at < closed;
END
$$;

CREATE FUNCTION mark_rollups_of_job_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN  -- an update that moved one of the times
        PERFORM mark_rollups_of_jobs(jsonb_build_array(to_jsonb(OLD), to_jsonb(NEW)));
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM mark_rollups_of_jobs(
            (SELECT jsonb_agg(jsonb_build_object('configuration_id', n.configuration_id,
                'created_at', n.created_at, 'completed_at', n.completed_at))
             FROM new_rows n));
    ELSE
        PERFORM mark_rollups_of_jobs(
            (SELECT jsonb_agg(jsonb_build_object('configuration_id', o.configuration_id,
                'created_at', o.created_at, 'completed_at', o.completed_at))
             FROM old_rows o));
    END IF;
    RETURN NULL;
END
$$;

-- Completions and errors: the quarter hours of completion (usage), the days of the job's
-- creation (the funnel), of the rows as they were and as they are.
CREATE FUNCTION mark_rollups_of_step_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    closed timestamptz := (SELECT closed_until FROM rollup_state);
BEGIN
    IF closed IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF TG_TABLE_NAME = 'job_step_completions' THEN
            INSERT INTO usage_rollup_marks (bucket_at)
            SELECT DISTINCT rollup_bucket(n.completed_at) FROM new_rows n
            WHERE n.completed_at < closed;
        END IF;
        INSERT INTO funnel_rollup_marks (configuration_id, day)
        SELECT DISTINCT n.configuration_id, date_trunc('day', n.job_created_at, 'UTC')
        FROM new_rows n WHERE n.job_created_at < closed;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        IF TG_TABLE_NAME = 'job_step_completions' THEN
            INSERT INTO usage_rollup_marks (bucket_at)
            SELECT DISTINCT rollup_bucket(o.completed_at) FROM old_rows o
            WHERE o.completed_at < closed;
        END IF;
        INSERT INTO funnel_rollup_marks (configuration_id, day)
        SELECT DISTINCT o.configuration_id, date_trunc('day', o.job_created_at, 'UTC')
        FROM old_rows o WHERE o.job_created_at < closed;
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGERS = r"""
CREATE TRIGGER mark_rollups_on_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_of_job_rows();
CREATE TRIGGER mark_rollups_on_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_of_job_rows();
CREATE TRIGGER mark_rollups_on_update AFTER UPDATE ON jobs
    FOR EACH ROW WHEN (
        OLD.created_at IS DISTINCT FROM NEW.created_at
        OR OLD.completed_at IS DISTINCT FROM NEW.completed_at
        OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
        OR OLD.configuration_id IS DISTINCT FROM NEW.configuration_id)
    EXECUTE FUNCTION mark_rollups_of_job_rows();
"""

STEP_TABLES = ("job_step_completions", "job_step_errors")
STEP_TRIGGERS = r"""
CREATE TRIGGER mark_rollups_on_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_of_step_rows();
CREATE TRIGGER mark_rollups_on_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_of_step_rows();
CREATE TRIGGER mark_rollups_on_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_rollups_of_step_rows();
"""


def _funnel_key() -> list[sa.Column[object]]:
    return [
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "level",
            sa.Enum("day", "month", name="rollup_level", create_type=False),
            nullable=False,
        ),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
    ]


def _configuration_key(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["configuration_id"],
        ["job_configurations.id"],
        name=op.f(f"fk_{table}_configuration_id_job_configurations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "rollup_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("closed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rolled_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_rollup_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_state")),
    )
    op.execute("INSERT INTO rollup_state (id) VALUES (1)")
    op.create_table(
        "usage_rollups",
        sa.Column("bucket_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("jobs_started", sa.Integer(), nullable=False),
        sa.Column("jobs_completed", sa.Integer(), nullable=False),
        sa.Column("steps_completed", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cost", MONEY, nullable=False),
        _configuration_key("usage_rollups"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_usage_rollups_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "bucket_at", "customer_id", "configuration_id", name=op.f("pk_usage_rollups")
        ),
    )
    op.create_index(
        "ix_usage_rollups_customer_id_bucket_at", "usage_rollups", ["customer_id", "bucket_at"]
    )
    op.create_table(
        "usage_rollup_marks",
        sa.Column("bucket_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_marks")),
    )
    op.create_index("ix_usage_rollup_marks_bucket_at", "usage_rollup_marks", ["bucket_at"])

    sa.Enum("day", "month", name="rollup_level").create(op.get_bind())
    op.create_table(
        "funnel_job_rollups",
        *_funnel_key(),
        sa.Column("jobs", sa.Integer(), nullable=False),
        _configuration_key("funnel_job_rollups"),
        sa.PrimaryKeyConstraint(
            "configuration_id",
            "level",
            "customer_id",
            "period_start",
            name=op.f("pk_funnel_job_rollups"),
        ),
    )
    op.create_table(
        "funnel_step_rollups",
        *_funnel_key(),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("seconds_bucket", sa.Integer(), nullable=False),
        sa.Column("completions", sa.Integer(), nullable=False),
        _configuration_key("funnel_step_rollups"),
        sa.PrimaryKeyConstraint(
            "configuration_id",
            "level",
            "customer_id",
            "period_start",
            "step_id",
            "seconds_bucket",
            name=op.f("pk_funnel_step_rollups"),
        ),
    )
    op.create_table(
        "funnel_error_rollups",
        *_funnel_key(),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("failed_only", sa.Integer(), nullable=False),
        _configuration_key("funnel_error_rollups"),
        sa.PrimaryKeyConstraint(
            "configuration_id",
            "level",
            "customer_id",
            "period_start",
            "step_id",
            name=op.f("pk_funnel_error_rollups"),
        ),
    )
    op.create_table(
        "funnel_rollup_marks",
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_funnel_rollup_marks")),
    )
    op.create_index(
        "ix_funnel_rollup_marks_configuration_id_day",
        "funnel_rollup_marks",
        ["configuration_id", "day"],
    )

    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    for table in STEP_TABLES:
        op.execute(STEP_TRIGGERS.format(table=table))


def downgrade() -> None:
    for table in ("jobs", *STEP_TABLES):
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER mark_rollups_on_{operation} ON {table}")
    op.execute("DROP FUNCTION mark_rollups_of_step_rows()")
    op.execute("DROP FUNCTION mark_rollups_of_job_rows()")
    op.execute("DROP FUNCTION mark_rollups_of_jobs(jsonb)")
    op.execute("DROP FUNCTION rollup_bucket(timestamptz)")
    for table in (
        "funnel_rollup_marks",
        "funnel_error_rollups",
        "funnel_step_rollups",
        "funnel_job_rollups",
        "usage_rollup_marks",
        "usage_rollups",
        "rollup_state",
    ):
        op.drop_table(table)
    op.execute("DROP TYPE rollup_level")
