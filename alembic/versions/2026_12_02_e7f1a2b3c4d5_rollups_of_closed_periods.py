"""Rollups of closed periods

Usage per quarter hour, hour and day (UTC), customer and configuration version; the steps
funnel per configuration version, day or month of job creation, and customer (or all of them);
`rollup_state`, how far they reach; and the marks that tell reads and the roll-up task which
closed periods changed.

Triggers mark, in the writer's transaction, every change to what a rollup counts that falls
before `closed_until`: on jobs (creation and completion times), job_step_completions and
job_step_errors. They are row triggers whose WHEN clause lets through only rows old enough to be
in a closed period (see CLOSE_AFTER): the events of the hot path, on time, call no function.

Revision ID: e7f1a2b3c4d5
Revises: d5e8b2c4a1f3
Create Date: 2026-12-02 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e7f1a2b3c4d5"
down_revision: str | None = "d5e8b2c4a1f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 4)

# A row can only be in a closed period if its time is older than this: the task closes the days
# that ended CLOSE_AFTER (app/services/rollups.py) before its own clock, and a trigger that fires
# after the close reads a later clock. So the triggers' WHEN clauses skip, without a function
# call, every row of an event that is on time: the hot path pays nothing for the rollups.
CLOSE_AFTER = "1 day"

FUNCTIONS = r"""
-- The quarter hour (UTC) that holds a moment: the grain of the usage rollups.
CREATE FUNCTION rollup_bucket(at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- Marks for a row as it was or is: the quarter hours of the usage it counts (`usage_times`),
-- the day of its job's creation (the funnel), where they are closed.
CREATE FUNCTION mark_rollups(
    usage_times timestamptz[], configuration_id bigint, job_created_at timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    closed timestamptz := (SELECT closed_until FROM rollup_state);
BEGIN
    IF closed IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO usage_rollup_marks (bucket_at)
    SELECT DISTINCT rollup_bucket(t.at) FROM unnest(usage_times) AS t(at) WHERE t.at < closed;
    IF job_created_at < closed THEN
        INSERT INTO funnel_rollup_marks (configuration_id, day)
        VALUES (configuration_id, date_trunc('day', job_created_at, 'UTC'));
    END IF;
END
$$;

CREATE FUNCTION mark_rollups_of_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF TG_TABLE_NAME = 'jobs' THEN
            PERFORM mark_rollups(ARRAY[OLD.created_at, OLD.completed_at], OLD.configuration_id,
                                 OLD.created_at);
        ELSIF TG_TABLE_NAME = 'job_step_completions' THEN
            PERFORM mark_rollups(ARRAY[OLD.completed_at], OLD.configuration_id,
                                 OLD.job_created_at);
        ELSE
            PERFORM mark_rollups(ARRAY[]::timestamptz[], OLD.configuration_id,
                                 OLD.job_created_at);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF TG_TABLE_NAME = 'jobs' THEN
            PERFORM mark_rollups(ARRAY[NEW.created_at, NEW.completed_at], NEW.configuration_id,
                                 NEW.created_at);
        ELSIF TG_TABLE_NAME = 'job_step_completions' THEN
            PERFORM mark_rollups(ARRAY[NEW.completed_at], NEW.configuration_id,
                                 NEW.job_created_at);
        ELSE
            PERFORM mark_rollups(ARRAY[]::timestamptz[], NEW.configuration_id,
                                 NEW.job_created_at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
"""

# Per table: the times a row is counted at, and the columns whose change matters to a rollup.
MARKED = {
    "jobs": (("created_at", "completed_at"), ("created_at", "completed_at", "customer_id",
                                              "configuration_id")),
    "job_step_completions": (("completed_at", "job_created_at"), ("completed_at",
                                                                  "seconds_bucket")),
    "job_step_errors": (("job_created_at",), ("error_count", "step_completed")),
}  # fmt: skip


def _old_enough(row: str, times: tuple[str, ...]) -> str:
    return " OR ".join(
        f"{row}.{time} < clock_timestamp() - interval '{CLOSE_AFTER}'" for time in times
    )


def _triggers(table: str) -> list[str]:
    times, changes = MARKED[table]
    changed = " OR ".join(f"OLD.{name} IS DISTINCT FROM NEW.{name}" for name in changes)
    when = {
        "insert": f"({_old_enough('NEW', times)})",
        "update": f"(({changed}) AND ({_old_enough('OLD', times)} OR {_old_enough('NEW', times)}))",
        "delete": f"({_old_enough('OLD', times)})",
    }
    return [
        f"CREATE TRIGGER mark_rollups_on_{operation} AFTER {operation.upper()} ON {table}"
        f" FOR EACH ROW WHEN {condition} EXECUTE FUNCTION mark_rollups_of_row()"
        for operation, condition in when.items()
    ]


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


def _funnel_primary_key(table: str, *more: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(
        "configuration_id", "level", "customer_id", "period_start", *more, name=op.f(f"pk_{table}")
    )


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
    usage_level = sa.Enum("quarter_hour", "hour", "day", name="usage_level")
    usage_level.create(op.get_bind())
    op.create_table(
        "usage_rollups",
        sa.Column(
            "level",
            sa.Enum("quarter_hour", "hour", "day", name="usage_level", create_type=False),
            nullable=False,
        ),
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
            "level", "bucket_at", "customer_id", "configuration_id", name=op.f("pk_usage_rollups")
        ),
    )
    op.create_index(
        "ix_usage_rollups_level_customer_id_bucket_at",
        "usage_rollups",
        ["level", "customer_id", "bucket_at"],
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
        _funnel_primary_key("funnel_job_rollups"),
    )
    op.create_table(
        "funnel_step_rollups",
        *_funnel_key(),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("seconds_buckets", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("completions", postgresql.ARRAY(sa.Integer()), nullable=False),
        _configuration_key("funnel_step_rollups"),
        _funnel_primary_key("funnel_step_rollups", "step_id"),
    )
    op.create_table(
        "funnel_error_rollups",
        *_funnel_key(),
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("failed_only", sa.Integer(), nullable=False),
        _configuration_key("funnel_error_rollups"),
        _funnel_primary_key("funnel_error_rollups", "step_id"),
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
    for table in MARKED:
        for trigger in _triggers(table):
            op.execute(trigger)


def downgrade() -> None:
    for table in MARKED:
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER mark_rollups_on_{operation} ON {table}")
    op.execute("DROP FUNCTION mark_rollups_of_row()")
    op.execute("DROP FUNCTION mark_rollups(timestamptz[], bigint, timestamptz)")
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
    op.execute("DROP TYPE usage_level")
