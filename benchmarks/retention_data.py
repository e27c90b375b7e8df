"""For benchmarks.retention: the synthetic events it measures on, twelve months of them in the
real `events` table and in a copy range-partitioned by month, and the helpers its parts share."""

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import URL

from benchmarks.support import (
    connection,
    migrate,
)

# Twelve months of history; inserts during the benchmark go to the month after them.
FIRST_MONTH = datetime(2025, 12, 1, tzinfo=UTC)
MONTHS = 12
EVENTS_PER_JOB = 20
STEPS = 20
CUSTOMERS = 20


def month_start(index: int) -> datetime:
    year, month = divmod(FIRST_MONTH.month - 1 + index, 12)
    return FIRST_MONTH.replace(year=FIRST_MONTH.year + year, month=month + 1)


def partition_name(index: int) -> str:
    return f"events_{month_start(index):%Y_%m}"


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


@contextlib.contextmanager
def cursor_on(url: URL, *, search_path: str = "public") -> Iterator[Any]:
    options = url.update_query_dict({"options": f"-csearch_path={search_path}"})
    with connection(options, autocommit=True) as conn, conn.cursor() as cursor:
        yield cursor


def timed(cursor: Any, label: str, statement: str, parameters: Any = None) -> float:
    started = time.perf_counter()
    cursor.execute(statement, parameters)
    elapsed = time.perf_counter() - started
    log(f"{label}: {elapsed:.1f} s")
    return elapsed


# Building the data ------------------------------------------------------------------------------

# Event i of n: received at an even spread over the twelve months, job 1 + (i - 1) / 20, step
# 1 + i % 20; 1 in 20 an error (resolved a minute later but for 1 in 100 of them), 1 in 20 info;
# most carry a client event_id, a quarter small metadata.
EVENTS = """
INSERT INTO events (id, job_id, kind, step_id, step_tag, event_id, message, metadata,
                    occurred_at, received_at, resolved_at)
SELECT i, 1 + (i - 1) / {per_job}, k.kind,
    CASE WHEN k.kind <> 'info' THEN 1 + i %% {steps} END,
    CASE WHEN k.kind <> 'info' THEN 'step-' || (1 + i %% {steps}) END,
    CASE WHEN i %% 10 <> 0 THEN 'evt-' || i END,
    CASE WHEN k.kind = 'error' THEN 'the scanner timed out after 30 s' END,
    CASE WHEN i %% 4 = 0 THEN jsonb_build_object('attempt', 1 + i %% 3, 'worker', 'w-' || i %% 16)
    END,
    t.at - interval '2 seconds', t.at,
    CASE WHEN k.kind = 'error' AND i %% 2000 <> 7 THEN t.at + interval '1 minute' END
FROM generate_series(1, %(rows)s::bigint) AS i,
LATERAL (SELECT %(start)s::timestamptz + (i - 1) * %(spacing)s * interval '1 second' AS at) t,
LATERAL (SELECT (CASE WHEN i %% 20 = 7 THEN 'error' WHEN i %% 20 = 13 THEN 'info'
                      ELSE 'step' END)::event_kind AS kind) k
"""

JOBS = """
INSERT INTO jobs (id, provider_job_id, customer_id, configuration_id, status, step_count,
                  steps_completed, total_points, completed_points, cost, event_count, error_count,
                  started_at, last_event_at, completed_at, last_step_completed_at, created_at,
                  updated_at)
SELECT j, 'bench-' || j, 1 + j %% {customers}, 1, 'completed', {steps}, {steps}, {steps},
    {steps}, {steps}, {per_job}, 1, t.first, t.last, t.last, t.last,
    t.first - interval '1 minute', t.last
FROM generate_series(1, %(jobs)s::bigint) AS j,
LATERAL (SELECT %(start)s::timestamptz + (j - 1) * {per_job} * %(spacing)s * interval '1 second'
                AS first,
                %(start)s::timestamptz + (j * {per_job} - 1) * %(spacing)s * interval '1 second'
                AS last) t
"""


def spacing_seconds(rows: int) -> float:
    return (month_start(MONTHS) - FIRST_MONTH).total_seconds() / rows


def build(url: URL, rows: int) -> None:
    migrate(url)
    jobs = rows // EVENTS_PER_JOB
    parameters = {
        "rows": rows,
        "jobs": jobs,
        "start": FIRST_MONTH,
        "spacing": spacing_seconds(rows),
    }
    shape = {"per_job": EVENTS_PER_JOB, "steps": STEPS, "customers": CUSTOMERS}
    with cursor_on(url) as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        cursor.execute(
            "INSERT INTO customers (id, name) SELECT c, 'Customer ' || c"
            f" FROM generate_series(1, {CUSTOMERS}) c"
        )
        cursor.execute(
            "INSERT INTO job_configurations (id, tag, version, name, content_hash, step_count,"
            f" total_points, total_cost) VALUES (1, 'bench', 1, 'Bench', 'x', {STEPS}, {STEPS},"
            f" {STEPS})"
        )
        cursor.execute(
            "INSERT INTO job_configuration_steps (id, configuration_id, position, tag, name,"
            " points, cost) SELECT s, 1, s, 'step-' || s, 'Step ' || s, 1, 1"
            f" FROM generate_series(1, {STEPS}) s"
        )
        timed(cursor, f"{jobs:,} jobs", JOBS.format(**shape), parameters)

        # Loaded without its indexes and foreign keys, which are then made as the migrations
        # define them (far faster than maintaining them row by row).
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'events'::regclass ORDER BY contype DESC"
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " AND tablename = 'events' AND indexname <> 'pk_events'"
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f"ALTER TABLE events DROP CONSTRAINT {name}")
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
        timed(cursor, f"{rows:,} events", EVENTS.format(**shape), parameters)
        # The primary key first (contype p sorts before f), then the indexes, then the keys.
        primary_key, *foreign_keys = constraints
        for name, definition in [primary_key, *indexes, *foreign_keys]:
            if not definition.startswith("CREATE"):
                definition = f"ALTER TABLE events ADD CONSTRAINT {name} {definition}"
            timed(cursor, name, definition)
        cursor.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), %s)", (rows,))
        cursor.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), %s)", (jobs,))
        cursor.execute("ALTER TABLE events SET (autovacuum_enabled = false)")

        build_partitioned(cursor, rows)
        timed(cursor, "VACUUM ANALYZE", "VACUUM ANALYZE")
        cursor.execute("CREATE TABLE bench_built (rows bigint, built_at timestamptz)")
        cursor.execute("INSERT INTO bench_built VALUES (%s, now())", (rows,))


def build_partitioned(cursor: Any, rows: int) -> None:
    """The same rows, range-partitioned by month on received_at. A partitioned table's primary
    key and unique indexes must include the partition key."""
    cursor.execute("CREATE SCHEMA partitioned")
    cursor.execute(
        "CREATE TABLE partitioned.events (LIKE public.events INCLUDING DEFAULTS"
        " INCLUDING IDENTITY) PARTITION BY RANGE (received_at)"
    )
    # The twelve months, and the one the inserter writes to.
    for month in range(MONTHS + 1):
        cursor.execute(
            f"CREATE TABLE partitioned.{partition_name(month)} PARTITION OF partitioned.events"
            " FOR VALUES FROM (%s) TO (%s) WITH (autovacuum_enabled = false)",
            (month_start(month), month_start(month + 1)),
        )
    timed(cursor, "partitioned copy", "INSERT INTO partitioned.events SELECT * FROM public.events")
    for label, statement in (
        ("primary key (id, received_at)",
         "ALTER TABLE partitioned.events ADD CONSTRAINT pk_events PRIMARY KEY (id, received_at)"),
        ("unique (job_id, event_id, received_at)",
         "CREATE UNIQUE INDEX uq_events_job_id_event_id_received_at ON partitioned.events"
         " (job_id, event_id, received_at)"),
        ("index (job_id, id)",
         "CREATE INDEX ix_events_job_id_id ON partitioned.events (job_id, id)"),
        ("index of unresolved errors",
         "CREATE INDEX ix_events_unresolved_errors ON partitioned.events (job_id, step_id)"
         " WHERE kind = 'error' AND resolved_at IS NULL"),
        ("foreign key to jobs",
         "ALTER TABLE partitioned.events ADD CONSTRAINT fk_events_job_id_jobs FOREIGN KEY"
         " (job_id) REFERENCES public.jobs (id) ON DELETE CASCADE"),
        ("foreign key to steps",
         "ALTER TABLE partitioned.events ADD CONSTRAINT fk_events_step_id_job_configuration_steps"
         " FOREIGN KEY (step_id) REFERENCES public.job_configuration_steps (id)"
         " ON DELETE RESTRICT"),
    ):  # fmt: skip
        timed(cursor, f"partitioned {label}", statement)
    cursor.execute("SELECT setval(pg_get_serial_sequence('partitioned.events', 'id'), %s)", (rows,))


def is_built(url: URL) -> bool:
    with cursor_on(url) as cursor:
        cursor.execute("SELECT to_regclass('bench_built') IS NOT NULL")
        return bool(cursor.fetchone()[0])
