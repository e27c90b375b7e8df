"""Retention at scale: deleting the oldest month of 20 million events in bounded batches (what
the `prune_events` task does) against dropping monthly partitions of the same data.

    .venv/bin/python -m benchmarks.retention [--rows 20000000] [--batch-size 1000]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--keep NAME [--build-only]]

It builds, on a scratch database migrated to head, 20 million synthetic events spread evenly
over 12 months (ids in time order, 20 per job, 5% errors of which 1% unresolved, 5% info) in the
real `events` table (its columns, indexes and foreign keys), and the same rows in a copy of it
range-partitioned by month on `received_at` (schema `partitioned`). Then, while another
connection inserts an event every 10 ms (and updates its job, as `apply_events` does) and a
third reads a job's events every 20 ms:

(a) plain table: the oldest month is deleted by `app.services.retention` in batches of
    --batch-size, each its own transaction (the first 100, a task run, while a transaction that
    updated a job row and one that read jobs stay open 2 s), then the table is vacuumed;
(b) partitioned: the oldest month's partition is detached (CONCURRENTLY) and dropped; the next
    one the same way while those 2 s transactions are open; the third without CONCURRENTLY.

For each it prints the elapsed time, the relation locks the operation held (polled every
25 ms, and read inside its transaction where it has one), what the inserter, the reader and the
operation waited for, their latencies, the sizes before and after (and, for (a), pgstattuple's
dead tuples and free space before and after VACUUM); then how the event path's lookups fare in
each layout, and what an index on `received_at`, which (a) does without, would cost inserts.
With --keep NAME the data is built once into NAME (kept) and each run measures a copy of it.
Figures are printed, never asserted. Building takes about 20 minutes on a 2-core machine: run it
in the background.
"""

import argparse
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from benchmarks.support import (
    add_database_url,
    connection,
    database_exists,
    local_maintenance,
    migrate,
    new_database,
    percentile,
)
from config import database as databases

# Twelve months of history; inserts during the benchmark go to the month after them.
FIRST_MONTH = datetime(2025, 12, 1, tzinfo=UTC)
MONTHS = 12
EVENTS_PER_JOB = 20
STEPS = 20
CUSTOMERS = 20
INSERT_EVERY_S = 0.010
READ_EVERY_S = 0.020
POLL_EVERY_S = 0.025
BASELINE_S = 5.0


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


# Load during an operation, and what it waited for -------------------------------------------


@dataclass
class Worker:
    """Runs `statement` every `every` seconds on a connection of its own until stopped."""

    url: URL
    search_path: str
    every: float
    statement: Callable[[], tuple[str, tuple[Any, ...]]]
    latencies: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    pid: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with cursor_on(self.url, search_path=self.search_path) as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.pid = cursor.fetchone()[0]
            self._ready.set()
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    cursor.execute(*self.statement())
                    if cursor.description:
                        cursor.fetchall()
                except psycopg2.Error as error:
                    self.errors.append((started, str(error).splitlines()[0]))
                elapsed = time.perf_counter() - started
                self.latencies.append((started, elapsed))
                self._stop.wait(max(0.0, self.every - elapsed))

    def during(self, start: float, end: float) -> list[float]:
        """The latencies of the statements that ran at some time between start and end."""
        return [
            elapsed * 1000 for at, elapsed in self.latencies if at < end and at + elapsed > start
        ]

    def errors_during(self, start: float, end: float) -> list[str]:
        return [message for at, message in self.errors if start <= at < end]


@dataclass
class LockMonitor:
    """Polls pg_locks: the relation locks the operator's backend holds, and any lock the
    workers wait for."""

    url: URL
    operator: int
    workers: dict[int, str]
    held: set[tuple[str, str]] = field(default_factory=set)
    waits: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "LockMonitor":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with cursor_on(self.url) as cursor:
            while not self._stop.is_set():
                cursor.execute(
                    "SELECT l.pid, l.granted, l.mode, l.locktype,"
                    " coalesce(n.nspname || '.' || c.relname, l.relation::text)"
                    " FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation"
                    " LEFT JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE l.pid = ANY(%s)",
                    ([self.operator, *self.workers],),
                )
                for pid, granted, mode, locktype, relation in cursor.fetchall():
                    catalog = (relation or "").startswith("pg_catalog.")
                    if pid == self.operator and granted and locktype == "relation" and not catalog:
                        self.held.add((mode, relation))
                    elif pid == self.operator and not granted:
                        what = relation or locktype
                        self.waits.append(f"the operation waited for {mode} on {what}")
                    elif pid in self.workers and not granted:
                        self.waits.append(f"{self.workers[pid]} waited for {mode} on "
                                          f"{relation or locktype}")  # fmt: skip
                self._stop.wait(POLL_EVERY_S)

    def describe_held(self) -> str:
        by_mode: dict[str, list[str]] = {}
        for mode, relation in sorted(self.held):
            by_mode.setdefault(mode, []).append(relation)
        return "; ".join(f"{mode}: {', '.join(names)}" for mode, names in by_mode.items())


@dataclass
class Load:
    inserter: Worker
    reader: Worker

    @classmethod
    def on(cls, url: URL, search_path: str, jobs: int) -> "Load":
        # New events for the newest jobs, each with the update of its job's row that
        # apply_events makes, in one transaction; reads of any job's first page of events.
        def insert() -> tuple[str, tuple[Any, ...]]:
            job = jobs - int(time.perf_counter() * 1000) % 1000
            step = 1 + int(time.perf_counter() * 1000) % STEPS
            return (
                "WITH stored AS (INSERT INTO events (job_id, kind, step_id, step_tag, event_id)"
                " VALUES (%s, 'step', %s, %s, %s) RETURNING job_id)"
                " UPDATE jobs SET event_count = event_count + 1, last_event_at = now(),"
                " updated_at = now() WHERE id = (SELECT job_id FROM stored)",
                (job, step, f"step-{step}", uuid.uuid4().hex),
            )

        def read() -> tuple[str, tuple[Any, ...]]:
            job = 1 + int(time.perf_counter() * 1_000_003) % jobs
            return (
                "SELECT id, kind, step_tag, received_at FROM events WHERE job_id = %s"
                " ORDER BY id LIMIT 50",
                (job,),
            )

        return cls(
            Worker(url, search_path, INSERT_EVERY_S, insert),
            Worker(url, search_path, READ_EVERY_S, read),
        )

    def __enter__(self) -> "Load":
        self.inserter.start()
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inserter.stop()
        self.reader.stop()

    @property
    def pids(self) -> dict[int, str]:
        return {self.inserter.pid: "the inserter", self.reader.pid: "the reader"}

    def report(self, label: str, start: float, end: float) -> None:
        for name, worker in (("inserts", self.inserter), ("reads", self.reader)):
            values = worker.during(start, end)
            if values:
                print(
                    f"  {label}: {name} {len(values):,}, median {statistics.median(values):.1f} ms,"
                    f" p99 {percentile(values, 0.99):.1f} ms, worst {max(values):.1f} ms"
                )
            errors = worker.errors_during(start, end)
            if errors:
                print(f"  {label}: {len(errors)} {name} failed: {'; '.join(sorted(set(errors)))}")


@dataclass
class Phase:
    label: str
    start: float
    end: float
    monitor: LockMonitor

    def report(self, load: Load) -> None:
        print(f"  {self.label}: {self.end - self.start:.1f} s")
        print(f"    locks held: {self.monitor.describe_held() or 'none seen'}")
        waits = sorted(set(self.monitor.waits))
        print(f"    waits seen: {'; '.join(waits) if waits else 'none'}"
              f" ({len(self.monitor.waits)} polls)")  # fmt: skip
        if self.monitor.failures:
            print(
                f"    the operation failed and was tried again: {'; '.join(self.monitor.failures)}"
            )
        load.report("    load", self.start, self.end)


@contextlib.contextmanager
def phase(
    label: str, url: URL, operator: int, load: Load, phases: list[Phase]
) -> Iterator[LockMonitor]:
    with LockMonitor(url, operator, load.pids) as monitor:
        start = time.perf_counter()
        yield monitor
        end = time.perf_counter()
    phases.append(Phase(label, start, end, monitor))
    log(f"{label}: {end - start:.1f} s")


BLOCKING_S = 2.0


@contextlib.contextmanager
def open_transactions(url: URL, jobs: int) -> Iterator[None]:
    """Two transactions on jobs that stay open BLOCKING_S, as a batch of events in flight (a
    job row updated) and a long report (jobs read) would; the block starts once both hold
    their locks. The job is one neither the pruning nor the inserter touches."""
    statements = (
        f"UPDATE jobs SET event_count = event_count WHERE id = {jobs // 2}",
        "SELECT count(*) FROM jobs WHERE id < 1000",
    )
    holding = threading.Barrier(len(statements) + 1)

    def hold(statement: str) -> None:
        with cursor_on(url) as cursor:
            cursor.execute("BEGIN")
            cursor.execute(statement)
            holding.wait()
            cursor.execute("SELECT pg_sleep(%s)", (BLOCKING_S,))
            cursor.execute("COMMIT")

    threads = [threading.Thread(target=hold, args=(statement,)) for statement in statements]
    for thread in threads:
        thread.start()
    holding.wait()
    try:
        yield
    finally:
        for thread in threads:
            thread.join()


def in_transaction(cursor: Any, statement: str, monitor: LockMonitor) -> None:
    """Run `statement` in a transaction of its own, noting every relation lock it holds at
    the end (too quick an operation escapes the polling); tried again after a deadlock."""
    for _ in range(10):
        try:
            cursor.execute("BEGIN")
            cursor.execute(statement)
            cursor.execute(
                "SELECT l.mode, n.nspname || '.' || c.relname FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted"
                " AND n.nspname <> 'pg_catalog'"
            )
            monitor.held.update(cursor.fetchall())
            cursor.execute("COMMIT")
            return
        except psycopg2.errors.DeadlockDetected as error:
            cursor.execute("ROLLBACK")
            monitor.failures.append(str(error).splitlines()[0])
    raise RuntimeError(f"{statement}: deadlocked 10 times")


def detach_concurrently(cursor: Any, partition: str, monitor: LockMonitor) -> None:
    """DETACH ... CONCURRENTLY runs two transactions of its own; one interrupted between them
    leaves the partition pending, which FINALIZE completes."""
    try:
        cursor.execute(
            f"ALTER TABLE partitioned.events DETACH PARTITION partitioned.{partition} CONCURRENTLY"
        )
    except psycopg2.Error as error:
        monitor.failures.append(str(error).splitlines()[0])
        cursor.execute(
            f"ALTER TABLE partitioned.events DETACH PARTITION partitioned.{partition} FINALIZE"
        )


def baseline(load: Load, phases: list[Phase], url: URL, operator: int) -> None:
    with phase("no operation (baseline)", url, operator, load, phases):
        time.sleep(BASELINE_S)


# Sizes ------------------------------------------------------------------------------------------

MB = 1024 * 1024


def sizes(cursor: Any, table: str) -> str:
    """Heap and index bytes of a table, or of all the partitions of a partitioned one."""
    cursor.execute(
        "SELECT count(*), coalesce(sum(pg_table_size(t.relid)), 0),"
        " coalesce(sum(pg_indexes_size(t.relid)), 0)"
        " FROM (SELECT relid FROM pg_partition_tree(%(table)s::regclass) WHERE isleaf"
        "       UNION SELECT oid FROM pg_class"
        "       WHERE oid = %(table)s::regclass AND relkind = 'r') t",
        {"table": table},
    )
    partitions, heap, indexes = cursor.fetchone()
    where = f" in {partitions} partitions" if partitions > 1 else ""
    return f"table {heap / MB:,.0f} MB, indexes {indexes / MB:,.0f} MB{where}"


def dead_space(cursor: Any) -> str:
    cursor.execute(
        "SELECT tuple_count, dead_tuple_count, dead_tuple_percent, free_percent"
        " FROM pgstattuple('public.events')"
    )
    live, dead, dead_percent, free_percent = cursor.fetchone()
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, s.leaf_pages, s.deleted_pages, s.avg_leaf_density"
        " FROM pg_index i, LATERAL pgstatindex(i.indexrelid) s"
        " WHERE i.indrelid = 'public.events'::regclass ORDER BY 1"
    )
    leaves = ", ".join(
        f"{name} {leaf:,} leaf pages ({deleted:,} deleted), {density:.0f}% full"
        for name, leaf, deleted, density in cursor.fetchall()
    )
    return (
        f"pgstattuple: {live:,} live, {dead:,} dead tuples ({dead_percent:.1f}%),"
        f" {free_percent:.1f}% free space; {leaves}"
    )


# The two layouts --------------------------------------------------------------------------------


def measure_deletion(url: URL, rows: int, batch_size: int) -> None:
    from app.services import retention

    print("\n(a) plain table: delete the oldest month in batches of", f"{batch_size:,}")
    jobs = rows // EVENTS_PER_JOB
    cutoff = month_start(1)
    engine = create_engine(url.set(drivername="postgresql+psycopg2"))
    phases: list[Phase] = []
    with cursor_on(url) as cursor, engine.connect() as operator:
        cursor.execute("SELECT count(*) FROM events WHERE received_at < %s", (cutoff,))
        print(f"  events received before {cutoff:%Y-%m-%d}: {cursor.fetchone()[0]:,}")
        print(f"  before: {sizes(cursor, 'public.events')}")
        pid = operator.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        operator.commit()
        cursor.execute("CHECKPOINT")
        batches: list[float] = []
        deleted = 0
        with Load.on(url, "public", jobs) as load:
            baseline(load, phases, url, pid)
            with (
                phase("finding the first id after the cutoff", url, pid, load, phases),
                Session(bind=operator) as session,
            ):
                pruning = retention.start_pruning(session, cutoff=cutoff)
                session.commit()

            def delete(most: int) -> bool:
                """Up to `most` batches; whether there is more to do."""
                nonlocal deleted
                for _ in range(most):
                    started = time.perf_counter()
                    with Session(bind=operator) as session:
                        done = retention.prune_batch(session, pruning=pruning, limit=batch_size)
                        session.commit()
                    batches.append((time.perf_counter() - started) * 1000)
                    deleted += done
                    if done < batch_size:
                        return False
                return True

            with (
                open_transactions(url, jobs),
                phase(
                    f"a task run's 100 batches, with {BLOCKING_S:.0f} s transactions on jobs open",
                    url, pid, load, phases,
                ),
            ):  # fmt: skip
                more = delete(100)
            with phase("the rest of the month, batch after batch", url, pid, load, phases):
                while more:
                    more = delete(100)
            print(f"  before VACUUM: {sizes(cursor, 'public.events')}")
            print(f"  before VACUUM: {dead_space(cursor)}")
            with cursor_on(url) as vacuum:
                vacuum.execute("SELECT pg_backend_pid()")
                with phase("VACUUM events", url, vacuum.fetchone()[0], load, phases):
                    vacuum.execute("VACUUM events")
            for each in phases:
                each.report(load)
        print(
            f"  deleted {deleted:,} events in {len(batches):,} batches: median"
            f" {statistics.median(batches):.0f} ms, p99 {percentile(batches, 0.99):.0f} ms,"
            f" worst {max(batches):.0f} ms a batch; first id kept {pruning.below_id:,}"
        )
        cursor.execute("SELECT count(*) FROM events WHERE received_at < %s", (cutoff,))
        print(f"  left before the cutoff (unresolved errors): {cursor.fetchone()[0]:,}")
        print(f"  after VACUUM: {sizes(cursor, 'public.events')}")
        print(f"  after VACUUM: {dead_space(cursor)}")
    engine.dispose()


def measure_partition_drop(url: URL, rows: int) -> None:
    print("\n(b) partitioned by month: detach and drop the oldest months' partitions")
    jobs = rows // EVENTS_PER_JOB
    oldest, second, third = partition_name(0), partition_name(1), partition_name(2)
    phases: list[Phase] = []
    with (
        cursor_on(url, search_path="partitioned,public") as cursor,
        cursor_on(url, search_path="partitioned,public") as operator,
    ):
        cursor.execute(f"SELECT count(*) FROM partitioned.{oldest}")
        print(f"  events in {oldest}: {cursor.fetchone()[0]:,}")
        print(f"  before: {sizes(cursor, 'partitioned.events')}")
        try:
            cursor.execute("CREATE UNIQUE INDEX ON partitioned.events (job_id, event_id)")
        except psycopg2.Error as error:
            print(f"  the idempotency index as it is: {str(error).splitlines()[0]}")
        operator.execute("SELECT pg_backend_pid()")
        pid = operator.fetchone()[0]
        cursor.execute("CHECKPOINT")
        with Load.on(url, "partitioned,public", jobs) as load:
            baseline(load, phases, url, pid)
            with phase(f"counting {oldest}'s events per job (to record them)", url, pid, load,
                       phases):  # fmt: skip
                operator.execute(
                    f"SELECT job_id, count(*) FROM partitioned.{oldest} GROUP BY job_id"
                )
                operator.fetchall()
            with phase(
                f"DETACH PARTITION {oldest} CONCURRENTLY", url, pid, load, phases
            ) as monitor:
                detach_concurrently(operator, oldest, monitor)
            with phase(f"DROP TABLE {oldest}", url, pid, load, phases) as monitor:
                in_transaction(operator, f"DROP TABLE partitioned.{oldest}", monitor)
            dropped_one = sizes(cursor, "partitioned.events")
            blocked = f"with {BLOCKING_S:.0f} s transactions on jobs open"
            with (
                open_transactions(url, jobs),
                phase(f"DETACH PARTITION {second} CONCURRENTLY, {blocked}", url, pid, load,
                      phases) as monitor,
            ):  # fmt: skip
                detach_concurrently(operator, second, monitor)
            with (
                open_transactions(url, jobs),
                phase(f"DROP TABLE {second}, {blocked}", url, pid, load, phases) as monitor,
            ):
                in_transaction(operator, f"DROP TABLE partitioned.{second}", monitor)
            with phase(f"DETACH PARTITION {third} (not concurrently)", url, pid, load,
                       phases) as monitor:  # fmt: skip
                in_transaction(
                    operator,
                    f"ALTER TABLE partitioned.events DETACH PARTITION partitioned.{third}",
                    monitor,
                )
            with phase(f"DROP TABLE {third}", url, pid, load, phases) as monitor:
                in_transaction(operator, f"DROP TABLE partitioned.{third}", monitor)
            for each in phases:
                each.report(load)
        print(f"  after the first drop: {dropped_one}")
        print(f"  after all three: {sizes(cursor, 'partitioned.events')}")


def measure_received_at_index(url: URL, rows: int) -> None:
    """The cost to inserts of the index (a) does without: the same rows inserted into a copy
    of events with its indexes, and with an index on received_at too, alternately."""
    print("\nan index on received_at: what it would cost every insert")
    count = min(rows // 10, 1_000_000)
    with cursor_on(url) as cursor:
        cursor.execute("CREATE TABLE bench_plain (LIKE events INCLUDING ALL)")
        cursor.execute("CREATE TABLE bench_indexed (LIKE events INCLUDING ALL)")
        cursor.execute("CREATE INDEX ON bench_indexed (received_at)")
        spent: dict[str, list[float]] = {"bench_plain": [], "bench_indexed": []}
        for _ in range(3):
            for table in spent:
                cursor.execute(f"TRUNCATE {table}")
                cursor.execute("CHECKPOINT")
                started = time.perf_counter()
                cursor.execute(
                    f"INSERT INTO {table} SELECT * FROM events WHERE id > %s ORDER BY id LIMIT %s",
                    (rows - count, count),
                )
                spent[table].append(time.perf_counter() - started)
        plain, indexed = (statistics.median(spent[table]) for table in spent)
        print(
            f"  {count:,} rows, median of 3: {plain * 1e6 / count:.1f} us a row with the"
            f" events indexes, {indexed * 1e6 / count:.1f} us with received_at too"
            f" (+{(indexed / plain - 1) * 100:.0f}%)"
        )
        cursor.execute("SELECT pg_relation_size('pk_events')")
        print(
            "  its size would be about the primary key's (one 8-byte key a row):"
            f" {cursor.fetchone()[0] / MB:,.0f} MB"
        )
        cursor.execute("DROP TABLE bench_plain, bench_indexed")


# Running ----------------------------------------------------------------------------------------


LOOKUPS = (
    ("an event by job and event_id (the idempotency check)",
     "SELECT id FROM events WHERE job_id = %(job)s AND event_id = %(key)s"),
    ("an event by id (apply_event reads back the stored event)",
     "SELECT * FROM events WHERE id = %(id)s"),
    ("a job's unresolved errors (resolving them; the job's detail)",
     "SELECT id FROM events WHERE job_id = %(job)s AND kind = 'error' AND resolved_at IS NULL"),
    ("a job's first page of events (GET /jobs/{id}/events)",
     "SELECT * FROM events WHERE job_id = %(job)s ORDER BY id LIMIT 50"),
)  # fmt: skip


def plan_figures(plan: dict[str, Any]) -> tuple[int, int]:
    """The tables (partitions) a plan scans, and the shared buffers it touched."""
    scans = int("Relation Name" in plan)
    for child in plan.get("Plans", []):
        scans += plan_figures(child)[0]
    return scans, plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


def compare_lookups(url: URL, rows: int) -> None:
    """How the queries of the event path find events in each layout."""
    print("\nhow the event path finds events (EXPLAIN ANALYZE, a job of the middle month)")
    event = rows // 2 + 7
    parameters = {"job": 1 + (event - 1) // EVENTS_PER_JOB, "key": f"evt-{event}", "id": event}
    for label, statement in LOOKUPS:
        figures = []
        for search_path in ("public", "partitioned,public"):
            with cursor_on(url, search_path=search_path) as cursor:
                cursor.execute(statement, parameters)  # warm
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                [result] = cursor.fetchone()[0]
                scans, buffers = plan_figures(result["Plan"])
                figures.append(
                    f"{scans} table{'s' * (scans != 1)} scanned, {buffers} buffers,"
                    f" {result['Execution Time']:.2f} ms"
                )
        print(f"  {label}: plain {figures[0]}; partitioned {figures[1]}")


def measure(url: URL, rows: int, batch_size: int) -> None:
    compare_lookups(url, rows)
    measure_deletion(url, rows, batch_size)
    measure_partition_drop(url, rows)
    measure_received_at_index(url, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20_000_000, help="events (default 20 M)")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows a batch (1,000)")
    add_database_url(parser)
    parser.add_argument(
        "--keep", metavar="NAME", help="build the data once into this database and keep it"
    )
    parser.add_argument("--build-only", action="store_true", help="with --keep: build, then stop")
    args = parser.parse_args()

    maintenance = local_maintenance(parser, args.database_url)
    started = time.perf_counter()
    if args.keep:
        if not database_exists(maintenance, args.keep):
            new_database(maintenance, args.keep)
        kept = maintenance.set(database=args.keep)
        if not is_built(kept):
            log(f"building {args.rows:,} events into {args.keep} (kept)")
            build(kept, args.rows)
        with connection(kept, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT rows FROM bench_built")
            rows = int(cursor.fetchone()[0])
        if args.build_only:
            log(f"{rows:,} events in {args.keep}")
            return
        name = f"{args.keep}_run_{uuid.uuid4().hex[:6]}"
        run = new_database(maintenance, name, template=args.keep)
        try:
            measure(run, rows, args.batch_size)
        finally:
            databases.drop_database(run)
    else:
        with databases.scratch_database(maintenance, prefix="retention_bench") as url:
            log(f"building {args.rows:,} events into {url.database}")
            build(url, args.rows)
            measure(url, args.rows, args.batch_size)
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
