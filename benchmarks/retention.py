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
import statistics
import time
import uuid
from typing import Any

import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from benchmarks.retention_data import (
    EVENTS_PER_JOB,
    build,
    cursor_on,
    is_built,
    log,
    month_start,
    partition_name,
)
from benchmarks.retention_load import (
    BLOCKING_S,
    Load,
    Phase,
    baseline,
    detach_concurrently,
    in_transaction,
    open_transactions,
    phase,
)
from benchmarks.support import (
    add_database_url,
    connection,
    database_exists,
    local_maintenance,
    new_database,
    percentile,
)
from config import database as databases

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
