"""The baseline of benchmarks.ingest: the rows the API writes for step events (the event, the
step's completion, the job's counters), written by plain statements: one transaction per event
sent with psycopg2, a multi-row insert per batch, and, for measuring one session's work per
event with EXPLAIN, the same statements in a PL/pgSQL function (`RAW_EVENT_FUNCTION`)."""

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extras


@dataclass(frozen=True)
class Step:
    id: int
    tag: str
    points: int
    cost: Decimal


@dataclass(frozen=True)
class PlannedEvent:
    job_id: int
    step: Step
    event_id: str


Batch = list[PlannedEvent]


LOCK_JOB = """
    SELECT customer_id, configuration_id, created_at, coalesce(last_step_completed_at, created_at)
    FROM jobs WHERE id = %s FOR UPDATE
"""
INSERT_EVENT = """
    INSERT INTO events (job_id, kind, step_id, step_tag, event_id, received_at)
    VALUES (%s, 'step', %s, %s, %s, now()) RETURNING id
"""
INSERT_COMPLETION = """
    INSERT INTO job_step_completions (job_id, step_id, customer_id, configuration_id, event_id,
        completed_at, points, cost, job_created_at, seconds_since_previous)
    VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, extract(epoch FROM now() - %s))
    ON CONFLICT DO NOTHING RETURNING job_id
"""
UPDATE_JOB = """
    UPDATE jobs SET
        event_count = event_count + %(events)s,
        steps_completed = steps_completed + %(steps)s,
        completed_points = completed_points + %(points)s,
        cost = cost + %(cost)s,
        started_at = coalesce(started_at, now()),
        last_event_at = now(),
        last_step_completed_at = CASE WHEN %(steps)s > 0 THEN now()
                                 ELSE last_step_completed_at END,
        status = (CASE WHEN steps_completed + %(steps)s >= step_count
                  THEN 'completed' ELSE 'running' END)::job_status,
        updated_at = now()
    WHERE id = %(job_id)s
"""


def update_job(cursor: Any, job_id: int, events: int, steps: Sequence[Step]) -> None:
    cursor.execute(
        UPDATE_JOB,
        {
            "job_id": job_id,
            "events": events,
            "steps": len(steps),
            "points": sum(step.points for step in steps),
            "cost": sum((step.cost for step in steps), Decimal(0)),
        },
    )


def in_transaction(conn: Any, work: Callable[[Any], None]) -> str | None:
    try:
        with conn.cursor() as cursor:
            work(cursor)
        conn.commit()
    except psycopg2.Error as error:
        conn.rollback()
        return f"baseline: {error!r}"[:200]
    return None


def sql_event(conn: Any, event: PlannedEvent) -> str | None:
    def work(cursor: Any) -> None:
        cursor.execute(LOCK_JOB, (event.job_id,))
        customer_id, configuration_id, created_at, previous = cursor.fetchone()
        step = event.step
        cursor.execute(INSERT_EVENT, (event.job_id, step.id, step.tag, event.event_id))
        (event_row,) = cursor.fetchone()
        cursor.execute(
            INSERT_COMPLETION,
            (event.job_id, step.id, customer_id, configuration_id, event_row, step.points,
             step.cost, created_at, previous),
        )  # fmt: skip
        update_job(cursor, event.job_id, 1, [step] if cursor.fetchone() else [])

    return in_transaction(conn, work)


def sql_batch(conn: Any, batch: Batch) -> str | None:
    """A multi-row insert of the events and of their completions, and one UPDATE per job."""

    def work(cursor: Any) -> None:
        job_ids = sorted({event.job_id for event in batch})
        cursor.execute(
            "SELECT id, customer_id, configuration_id, created_at FROM jobs "
            "WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (job_ids,),
        )
        owners = {row[0]: row[1:] for row in cursor.fetchall()}
        rows = [(e.job_id, e.step.id, e.step.tag, e.event_id) for e in batch]
        event_rows = psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO events (job_id, kind, step_id, step_tag, event_id, received_at) "
            "VALUES %s RETURNING id",
            rows,
            template="(%s, 'step', %s, %s, %s, now())",
            page_size=len(rows),
            fetch=True,
        )
        completions = [
            (e.job_id, e.step.id, *owners[e.job_id][:2], row_id, e.step.points, e.step.cost,
             owners[e.job_id][2])
            for e, (row_id,) in zip(batch, event_rows, strict=True)
        ]  # fmt: skip
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO job_step_completions (job_id, step_id, customer_id, configuration_id, "
            "event_id, completed_at, points, cost, job_created_at, seconds_since_previous) "
            "VALUES %s ON CONFLICT DO NOTHING",
            completions,
            template="(%s, %s, %s, %s, %s, now(), %s, %s, %s, 0)",
            page_size=len(completions),
        )
        by_job: defaultdict[int, list[Step]] = defaultdict(list)
        for event in batch:
            by_job[event.job_id].append(event.step)
        for job_id in job_ids:
            steps = by_job[job_id]
            update_job(cursor, job_id, len(steps), list({step.id: step for step in steps}.values()))

    return in_transaction(conn, work)


def _in_plpgsql(statement: str, *names: str) -> str:
    """A statement above with its parameters replaced by PL/pgSQL variables: each %s in turn by
    `names`, each %(name)s by p_name."""
    for name in names:
        statement = statement.replace("%s", name, 1)
    return re.sub(r"%\((\w+)\)s", r"p_\1", statement).strip()


# One step event by the baseline's statements, as one call: EXPLAIN (ANALYZE, BUFFERS, WAL) of
# `SELECT * FROM bench_raw_event(...)` counts their foreign key checks and triggers inside the
# call, as it counts those of the statements inside `apply_event`.
_LOCK = _in_plpgsql(LOCK_JOB, "p_job_id")
_EVENT = _in_plpgsql(INSERT_EVENT, "p_job_id", "p_step_id", "p_tag", "p_key")
_COMPLETION = _in_plpgsql(
    INSERT_COMPLETION, "p_job_id", "p_step_id", "p_customer_id", "p_configuration_id",
    "p_event_row", "p_points", "p_cost", "p_created_at", "p_previous",
)  # fmt: skip
RAW_EVENT_FUNCTION = f"""
CREATE FUNCTION bench_raw_event(
    p_job_id bigint, p_step_id bigint, p_tag text, p_points integer, p_cost numeric, p_key text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    p_customer_id bigint;
    p_configuration_id bigint;
    p_created_at timestamptz;
    p_previous timestamptz;
    p_event_row bigint;
    p_completed_job_id bigint;
    p_events integer := 1;
    p_steps integer;
BEGIN
    {_LOCK}
    INTO p_customer_id, p_configuration_id, p_created_at, p_previous;
    {_EVENT}
    INTO p_event_row;
    {_COMPLETION}
    INTO p_completed_job_id;
    GET DIAGNOSTICS p_steps = ROW_COUNT;
    IF p_steps = 0 THEN
        p_points := 0;
        p_cost := 0;
    END IF;
    {_in_plpgsql(UPDATE_JOB)};
    RETURN p_event_row;
END
$$
"""
