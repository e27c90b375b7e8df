"""Deadlines, stalled jobs and webhooks

Configuration versions get their timeouts and jobs their `deadline_at`, which `apply_events`
now moves with every event (`job_deadline`, the rule); `job_step_timings` holds each step's
learnt times (refreshed by the deadline sweep), so an event reads one row to learn how long to
wait. Webhook endpoints, their outbox (`webhook_deliveries`) and the attempts' log;
`enqueue_webhooks` writes the outbox, and `apply_events` calls it when a job completes or fails.

`apply_events` is the previous migration's body with the changes below applied (each must
match exactly once), so that what changed is read here and the rest stays in one place.

Revision ID: d5e8b2c4a1f3
Revises: c3a9e1f0d7b2
Create Date: 2026-12-01 22:30:00.000000
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d5e8b2c4a1f3"
down_revision: str | None = "c3a9e1f0d7b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Seconds: 30 days for the start and step timeouts, a year for the job's.
TIMEOUT_LIMITS = (("start_timeout", 2592000), ("step_timeout", 2592000), ("job_timeout", 31536000))

PREVIOUS = "2026_12_01_c3a9e1f0d7b2_apply_events_in_the_database.py"


def _previous() -> ModuleType:
    spec = importlib.util.spec_from_file_location("previous", Path(__file__).with_name(PREVIOUS))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The earliest deadline that applies to a job with this (new) status: job_timeout from creation;
# start_timeout from creation while no event came; else, from the last event, step_timeout or
# the learnt wait of the first step (by position) not yet complete. None for a finished job.
JOB_DEADLINE = """
CREATE FUNCTION job_deadline(
    for_job bigint,
    of_configuration bigint,
    new_status job_status,
    created timestamptz,
    last_event timestamptz
) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN new_status IN ('pending', 'running') THEN least(
        created + make_interval(secs => c.job_timeout),
        CASE WHEN last_event IS NULL THEN created + make_interval(secs => c.start_timeout)
             ELSE last_event + make_interval(secs => coalesce(c.step_timeout, CASE
                 -- One probe when the version has learnt nothing yet (no history).
                 WHEN EXISTS (SELECT 1 FROM job_step_timings learnt
                              WHERE learnt.configuration_id = c.id
                                AND learnt.wait_seconds IS NOT NULL)
                 THEN (SELECT timing.wait_seconds
                       FROM job_configuration_steps s
                       LEFT JOIN job_step_timings timing ON timing.step_id = s.id
                       WHERE s.configuration_id = c.id
                         AND NOT EXISTS (SELECT 1 FROM job_step_completions done
                                         WHERE done.job_id = for_job AND done.step_id = s.id)
                       ORDER BY s.position
                       LIMIT 1)
             END))
        END) END
    FROM job_configurations c WHERE c.id = of_configuration
$$
"""

ENQUEUE_WEBHOOKS = """
CREATE FUNCTION enqueue_webhooks(job_ids bigint[], of_type text, at timestamptz)
RETURNS integer LANGUAGE sql AS $$
    -- One outbox row per job and enabled endpoint that asked for this event type: the
    -- endpoints of the job's customer, and those for every customer.
    WITH queued AS (
        INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, job_id,
                                        next_attempt_at, created_at)
        SELECT e.id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), of_type, j.id, at, at
        FROM jobs j
        JOIN webhook_endpoints e ON (e.customer_id = j.customer_id OR e.customer_id IS NULL)
            AND e.enabled AND of_type = ANY(e.event_types)
        WHERE j.id = ANY(job_ids)
        ORDER BY j.id, e.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM queued
$$
"""

# (old, new) pairs applied to the previous body of apply_events.
APPLY_EVENTS_CHANGES = (
    (
        "CREATE FUNCTION apply_events(",
        "CREATE OR REPLACE FUNCTION apply_events(",
    ),
    (
        "-- Answers one row per event",
        "-- * every job an event is stored for gets its deadline again (`job_deadline`), info\n"
        "--   events included (heartbeats); a stalled job's status is worked out afresh;\n"
        "-- * a job that becomes completed or failed gets its webhook notifications queued\n"
        "--   (`enqueue_webhooks`), in this transaction.\n"
        "--\n"
        "-- Answers one row per event",
    ),
    (
        "    retime bigint[];\nBEGIN",
        "    retime bigint[];\n    completed_jobs bigint[];\n    failed_jobs bigint[];\nBEGIN",
    ),
    (
        "        -- 7. Each job's row, once: counters, times and status.\n"
        "        UPDATE jobs j SET",
        "        -- 7. Each job's row, once: counters, times, status and deadline.\n"
        "        WITH updated AS (\n        UPDATE jobs j SET",
    ),
    (
        "            status = job_status(false, t.unresolved_error_count, t.steps_completed,\n"
        "                                j.step_count, t.event_count)\n"
        "        FROM (\n"
        "            SELECT old.id,\n",
        "            status = t.status,\n"
        "            deadline_at = job_deadline(j.id, j.configuration_id, t.status, j.created_at,\n"
        "                                       t.last_received_at)\n"
        "        FROM (\n"
        "          SELECT counted.*, job_status(false, counted.unresolved_error_count,\n"
        "              counted.steps_completed, counted.step_count, counted.event_count)\n"
        "              AS status\n"
        "          FROM (\n"
        "            SELECT old.id, old.step_count, old.status AS old_status,\n",
    ),
    (
        "            GROUP BY old.id\n        ) t\n        WHERE j.id = t.id;\n    END IF;",
        "            GROUP BY old.id\n"
        "          ) counted\n"
        "        ) t\n"
        "        WHERE j.id = t.id\n"
        "        RETURNING j.id, j.status, t.old_status\n"
        "        )\n"
        "        SELECT array_agg(u.id) FILTER (WHERE u.status = 'completed'),\n"
        "               array_agg(u.id) FILTER (WHERE u.status = 'failed')\n"
        "        INTO completed_jobs, failed_jobs\n"
        "        FROM updated u WHERE u.status IS DISTINCT FROM u.old_status;\n"
        "\n"
        "        -- 8. The notifications of the jobs that have just completed or failed.\n"
        "        IF completed_jobs IS NOT NULL THEN\n"
        "            PERFORM enqueue_webhooks(completed_jobs, 'job.completed', now());\n"
        "        END IF;\n"
        "        IF failed_jobs IS NOT NULL THEN\n"
        "            PERFORM enqueue_webhooks(failed_jobs, 'job.failed', now());\n"
        "        END IF;\n"
        "    END IF;",
    ),
)

# apply_event answers the job's deadline too: a new column, so the function is made again.
APPLY_EVENT_CHANGES = (
    (
        "last_event_at timestamptz, completed_at timestamptz, cancelled_at timestamptz)",
        "last_event_at timestamptz, completed_at timestamptz, cancelled_at timestamptz,\n"
        "    deadline_at timestamptz)",
    ),
    (
        "j.last_event_at, j.completed_at, j.cancelled_at\n",
        "j.last_event_at, j.completed_at, j.cancelled_at, j.deadline_at\n",
    ),
)


def _changed(body: str, changes: Sequence[tuple[str, str]]) -> str:
    for old, new in changes:
        assert body.count(old) == 1, f"the previous body has no single {old!r}"
        body = body.replace(old, new)
    return body


def upgrade() -> None:
    # Committed at once: PostgreSQL refuses a new enum value in the transaction that adds it.
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'stalled'")

    for name, _ in TIMEOUT_LIMITS:
        op.add_column("job_configurations", sa.Column(name, sa.Integer(), nullable=True))
    for name, limit in TIMEOUT_LIMITS:
        op.create_check_constraint(
            op.f(f"ck_job_configurations_{name}_range"),
            "job_configurations",
            f"{name} BETWEEN 1 AND {limit}",
        )
    op.add_column("jobs", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_deadline_at_open",
        "jobs",
        ["deadline_at"],
        postgresql_where=sa.text("status IN ('pending', 'running') AND deadline_at IS NOT NULL"),
    )

    op.create_table(
        "job_step_timings",
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("configuration_id", sa.BigInteger(), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("median_seconds", sa.Double(), nullable=False),
        sa.Column("p90_seconds", sa.Double(), nullable=False),
        sa.Column("wait_seconds", sa.Double(), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["job_configurations.id"],
            name=op.f("fk_job_step_timings_configuration_id_job_configurations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["job_configuration_steps.id"],
            name=op.f("fk_job_step_timings_step_id_job_configuration_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("step_id", name=op.f("pk_job_step_timings")),
    )
    op.create_index(
        op.f("ix_job_step_timings_configuration_id"), "job_step_timings", ["configuration_id"]
    )

    op.create_table(
        "webhook_endpoints",
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("event_types", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=500), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_webhook_endpoints_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(op.f("ix_webhook_endpoints_customer_id"), "webhook_endpoints", ["customer_id"])

    delivery_status = postgresql.ENUM(
        "pending", "delivered", "failed", name="webhook_delivery_status"
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("status", delivery_status, server_default="pending", nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=True,
        ),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_webhook_deliveries_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("message_id", name=op.f("uq_webhook_deliveries_message_id")),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_id_id", "webhook_deliveries", ["endpoint_id", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_next_attempt_at_pending",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index("ix_webhook_attempts_delivery_id_id", "webhook_attempts", ["delivery_id", "id"])

    previous = _previous()
    op.execute(JOB_DEADLINE)
    op.execute(ENQUEUE_WEBHOOKS)
    op.execute(_changed(previous.APPLY_EVENTS, APPLY_EVENTS_CHANGES))
    op.execute("DROP FUNCTION apply_event(jsonb, bigint)")
    op.execute(_changed(previous.APPLY_EVENT, APPLY_EVENT_CHANGES))


def downgrade() -> None:
    previous = _previous()
    op.execute("DROP FUNCTION apply_event(jsonb, bigint)")
    op.execute(previous.APPLY_EVENT)
    op.execute(previous.APPLY_EVENTS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION enqueue_webhooks(bigint[], text, timestamptz)")
    op.execute("DROP FUNCTION job_deadline(bigint, bigint, job_status, timestamptz, timestamptz)")

    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.execute("DROP TYPE webhook_delivery_status")
    op.drop_table("webhook_endpoints")
    op.drop_table("job_step_timings")
    op.drop_index("ix_jobs_deadline_at_open", table_name="jobs")
    op.drop_column("jobs", "deadline_at")
    for name, _ in reversed(TIMEOUT_LIMITS):
        op.drop_constraint(op.f(f"ck_job_configurations_{name}_range"), "job_configurations")
        op.drop_column("job_configurations", name)
    # PostgreSQL cannot drop an enum value: stalled jobs get their status by the rule again, and
    # 'stalled' stays in the type, unused (the upgrade adds it only if it is missing).
    op.execute(
        "UPDATE jobs SET status = job_status(false, unresolved_error_count, steps_completed,"
        " step_count, event_count) WHERE status = 'stalled'"
    )
