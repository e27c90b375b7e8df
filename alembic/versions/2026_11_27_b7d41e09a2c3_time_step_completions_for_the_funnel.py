"""Time step completions for the funnel

Each completion keeps its job's creation time and the seconds since the job's previous
completion; each step's error count says whether the job completed the step too. The steps
funnel then reads these two tables alone, with no window over a year of completions. A job keeps
its latest completion time, from which its next step is usually timed.

Revision ID: b7d41e09a2c3
Revises: f40c6a5ac121
Create Date: 2026-11-27 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d41e09a2c3"
down_revision: str | None = "f40c6a5ac121"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME_COMPLETIONS = """
    UPDATE job_step_completions AS c
    SET job_created_at = timed.job_created_at, seconds_since_previous = timed.seconds
    FROM (
        SELECT c.job_id, c.step_id, j.created_at AS job_created_at,
               extract(epoch FROM c.completed_at - coalesce(
                   lag(c.completed_at) OVER (
                       PARTITION BY c.job_id ORDER BY c.completed_at, c.step_id
                   ),
                   j.created_at
               ))::double precision AS seconds
        FROM job_step_completions AS c JOIN jobs AS j ON j.id = c.job_id
    ) AS timed
    WHERE c.job_id = timed.job_id AND c.step_id = timed.step_id
"""

LAST_COMPLETIONS = """
    UPDATE jobs AS j SET last_step_completed_at = latest.completed_at
    FROM (
        SELECT job_id, max(completed_at) AS completed_at
        FROM job_step_completions GROUP BY job_id
    ) AS latest
    WHERE j.id = latest.job_id
"""

# app.internal.quantiles.bucket_key of the seconds, as the model renders it.
SECONDS_BUCKET = (
    "CASE WHEN (abs(seconds_since_previous) < 0.001) THEN 0 "
    "ELSE CAST(sign(seconds_since_previous) * (floor(ln(abs(seconds_since_previous) / "
    "CAST(0.001 AS DOUBLE PRECISION)) / CAST(0.010000083334583179 AS DOUBLE PRECISION)) + 1) "
    "AS INTEGER) END"
)

MARK_ERRORS = """
    UPDATE job_step_errors AS e
    SET job_created_at = j.created_at,
        step_completed = EXISTS (
            SELECT FROM job_step_completions AS c
            WHERE c.job_id = e.job_id AND c.step_id = e.step_id
        )
    FROM jobs AS j
    WHERE j.id = e.job_id
"""


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.add_column("job_step_completions", sa.Column("job_created_at", timestamp))
    op.add_column("job_step_completions", sa.Column("seconds_since_previous", sa.Double()))
    op.add_column(
        "job_step_completions",
        sa.Column("seconds_bucket", sa.Integer(), sa.Computed(SECONDS_BUCKET, persisted=True)),
    )
    op.add_column("job_step_errors", sa.Column("job_created_at", timestamp))
    op.add_column(
        "job_step_errors",
        sa.Column("step_completed", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("jobs", sa.Column("last_step_completed_at", timestamp))
    op.execute(TIME_COMPLETIONS)
    op.execute(LAST_COMPLETIONS)
    op.execute(MARK_ERRORS)
    op.alter_column("job_step_completions", "job_created_at", nullable=False)
    op.alter_column("job_step_completions", "seconds_since_previous", nullable=False)
    op.alter_column("job_step_completions", "seconds_bucket", nullable=False)
    op.alter_column("job_step_errors", "job_created_at", nullable=False)
    for table in ("job_step_completions", "job_step_errors"):
        op.create_index(
            op.f(f"ix_{table}_configuration_id_job_created_at"),
            table,
            ["configuration_id", "job_created_at"],
        )
    # Every row changed: without fresh statistics the planner takes the funnel for a few rows.
    op.execute("ANALYZE jobs, job_step_completions, job_step_errors")


def downgrade() -> None:
    for table in ("job_step_errors", "job_step_completions"):
        op.drop_index(op.f(f"ix_{table}_configuration_id_job_created_at"), table_name=table)
    op.drop_column("job_step_errors", "step_completed")
    op.drop_column("job_step_errors", "job_created_at")
    op.drop_column("job_step_completions", "seconds_bucket")
    op.drop_column("job_step_completions", "seconds_since_previous")
    op.drop_column("job_step_completions", "job_created_at")
    op.drop_column("jobs", "last_step_completed_at")
