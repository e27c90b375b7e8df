"""More bulk data quickly: the seeded bulk jobs copied, rows as the job contract left them.

The bulk seed applies every event through the job contract (`apply_events`), about 2,000 events a
second on a 2-core machine: a million jobs would take hours. So the analytics benchmark seeds
100,000 jobs and copies them in SQL: each job's row with its events, step completions, step
errors and webhook outbox rows. Copy k gives every row a new id (the id plus k times the table's
largest id at the start), each job the provider job id `bulk-<new id>`, each outbox row its
message id with `-k` appended, and moves every time of the job k minutes earlier: copies never
coincide, and every row stays consistent with its job (counters, progress, cost, status and
`seconds_since_previous` are the source job's, and its times all move together). This copies
consistent state; it is not a second implementation of the job rules: no event is applied here,
and nothing is computed but ids and times. Client event ids are unique per job only, so they are
kept.

Not copied: `job_step_timings` (one row per configuration step, not per job), which the deadline
sweep computes again from the completions; the rollups of closed periods, sums over all jobs:
where the copies skip the triggers that mark rolled-up periods (session_replication_role =
replica, as the bulk seed), every rollup is dropped, as the seed drops them, and the next
roll_up_periods run rolls everything up again. Outbox rows already sent (or tried) are refused:
their bodies name the source job (so there are no delivery attempts to copy).
"""

import time

import psycopg2
from sqlalchemy import Column, DateTime, Table
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from app.models import Base
from app.services import rollups
from benchmarks.support import connection
from config.database import Database

BULK_PREFIX = "bulk"  # the bulk seed's provider job ids: `bulk-<job id>`
MOVED_EARLIER = "interval '1 minute'"  # per copy

# The tables copied, parents first, each with its columns that hold ids of copied rows and the
# table of those rows.
COPIED: list[tuple[Table, dict[str, str]]] = [
    (Base.metadata.tables[name], ids)
    for name, ids in [
        ("jobs", {"id": "jobs"}),
        ("events", {"id": "events", "job_id": "jobs"}),
        ("job_step_completions", {"job_id": "jobs", "event_id": "events"}),
        ("job_step_errors", {"job_id": "jobs"}),
        ("webhook_deliveries", {"id": "webhook_deliveries", "job_id": "jobs"}),
    ]
]
NEW_IDS = ("jobs", "events", "webhook_deliveries")
Ids = dict[str, int]


def _value(table: Table, column: Column[object], ids: dict[str, str], k: int, largest: Ids) -> str:
    """What copy k stores in `column`; `largest` is each table's largest id at the start."""
    name = f'"{column.name}"'
    if column.name in ids:
        return f"{name} + {k * largest[ids[column.name]]}"
    if table.name == "jobs" and column.name == "provider_job_id":
        return f"'{BULK_PREFIX}-' || (id + {k * largest['jobs']})"
    if table.name == "webhook_deliveries" and column.name == "message_id":
        return f"{name} || '-{k}'"
    if isinstance(column.type, DateTime):
        return f"{name} - {k} * {MOVED_EARLIER}"
    return name


def _insert(table: Table, ids: dict[str, str], k: int, largest: Ids) -> str:
    columns = [column for column in table.columns if column.computed is None]
    names = ", ".join(f'"{column.name}"' for column in columns)
    values = ", ".join(_value(table, column, ids, k, largest) for column in columns)
    return f"INSERT INTO {table.name} ({names}) SELECT {values} FROM source_{table.name}"


def _take_sources(cursor: psycopg2.extensions.cursor) -> None:
    """Temporary tables of the rows to copy, so that every copy reads the same rows."""
    cursor.execute(
        "CREATE TEMPORARY TABLE source_jobs AS SELECT * FROM jobs WHERE provider_job_id LIKE %s",
        (f"{BULK_PREFIX}-%",),
    )
    for table, _ in COPIED[1:]:
        cursor.execute(
            f"CREATE TEMPORARY TABLE source_{table.name} AS SELECT * FROM {table.name} "
            "WHERE job_id IN (SELECT id FROM source_jobs)"
        )
    cursor.execute(
        "SELECT count(*) FROM source_webhook_deliveries "
        "WHERE body IS NOT NULL OR attempt_count > 0 OR last_attempt_at IS NOT NULL"
    )
    if cursor.fetchone()[0]:
        raise RuntimeError("the bulk jobs' webhook deliveries have been sent: not copied")


def copy_bulk_jobs(url: URL, *, copies: int) -> None:
    """Add `copies` copies of the bulk jobs of the database `url` names, with their rows."""
    started = time.perf_counter()
    with connection(url) as conn, conn.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        conn.commit()
        try:  # as the bulk seed does: the copies refer to rows that exist
            cursor.execute("SET session_replication_role = replica")
            conn.commit()
            triggers_skipped = True
        except psycopg2.Error:
            conn.rollback()
            triggers_skipped = False
        _take_sources(cursor)
        largest: Ids = {}
        for name in NEW_IDS:
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {name}")
            largest[name] = int(cursor.fetchone()[0])
        cursor.execute("SELECT count(*) FROM source_jobs")
        jobs = int(cursor.fetchone()[0])
        conn.commit()
        checks = "triggers skipped" if triggers_skipped else "triggers run"
        print(f"copying {jobs:,} bulk jobs {copies} times ({checks})...")
        for k in range(1, copies + 1):
            for table, ids in COPIED:
                cursor.execute(_insert(table, ids, k, largest))
            conn.commit()
            print(f"copy {k}/{copies} done at {time.perf_counter() - started:.0f} s", flush=True)
        for name in NEW_IDS:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) FROM {name}"
            )
        # As the bulk seed ends: the planner's statistics, no VACUUM.
        cursor.execute("ANALYZE " + ", ".join(table.name for table, _ in COPIED))
        conn.commit()
    if triggers_skipped:
        _forget_rollups(url)
    print(f"copied and analyzed in {time.perf_counter() - started:.0f} s")


def _forget_rollups(url: URL) -> None:
    database = Database(url)
    try:
        with Session(database.engine) as session:
            rollups.forget(session)
            session.commit()
    finally:
        database.dispose()
