"""Billing and analytics at scale: the read endpoints over a year of bulk data.

    .venv/bin/python -m benchmarks.analytics [--scale 1] [--repeat 20]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--keep NAME]
        [--from-template SCALE1_NAME]

It creates a scratch database (or reuses the one named by --keep, seeding it only when empty),
bulk-seeds it with `python tasks.py db:dev:seed --jobs 100000 --events-per-job 21` (2,000,000
events over 12 months and 20 customers: scale 1; a scale below 1 seeds that fraction), and for
a whole --scale N above 1 copies those jobs N - 1 times in SQL (`benchmarks.copies`): the seed
takes about 15 minutes per scale on a 2-core machine, a copy one or two. With --from-template,
the --keep database is made as a copy of an existing scale-1 database (`CREATE DATABASE ...
TEMPLATE`) and only the copies are added. It runs the roll_up_periods task until every closed
day is rolled up, then times each request through the API (the real app, in this process)
--repeat times: first as if nothing were rolled up (every fact read live from the per-step
tables), then with the rollups. It prints both 95th percentiles, the median, whether the two
answers are equal, the EXPLAIN ANALYZE of every SQL statement the request sent, and whether any
of them read the raw `events` table. Target on a 2-core machine: each at most 250 ms at p95,
none reading events. Figures are printed, never asserted.

Then it times the admins' `GET /system/status` the same way (with EVENT_RETENTION_DAYS set, so
that its retention entry is read too) and prints whether any of its plans scans a table.
Target: at most 100 ms at p95, no scan of jobs, events or deliveries.
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL

from benchmarks.copies import BULK_PREFIX, copy_bulk_jobs
from benchmarks.support import (
    add_database_url,
    app_env,
    connection,
    database_exists,
    local_maintenance,
    migrate,
    new_database,
    percentile,
    scratch_database,
)
from config.database import drop_database
from root import ROOT_DIR

BASE_JOBS = 100_000
EVENTS_PER_JOB = 21  # about 2,000,000 events at scale 1 (pending jobs have none)
TARGET_P95_MS = 250.0
STATUS_TARGET_P95_MS = 100.0
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    params: dict[str, Any]


def seed(url: URL, scale: float) -> None:
    """Seed BASE_JOBS jobs (or that fraction of them, below scale 1), then copy them."""
    jobs = max(int(BASE_JOBS * min(scale, 1)), 1)
    print(f"bulk seeding {jobs:,} jobs x ~{EVENTS_PER_JOB} events (this takes a while)...")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "tasks.py", "db:dev:seed", "--jobs", str(jobs),
         "--events-per-job", str(EVENTS_PER_JOB), "--customers", "20", "--months", "12"],
        cwd=ROOT_DIR,
        env=app_env(url),
        check=True,
    )  # fmt: skip
    print(f"seeded in {time.perf_counter() - started:.0f} s")
    if scale > 1:
        copy_bulk_jobs(url, copies=int(scale) - 1)


def from_template(maintenance: URL, name: str, template: str, scale: float) -> None:
    """The new database `name`, a copy of the scale-1 database `template`, filled to `scale`
    (dropped if that fails, so that it is never kept half filled)."""
    url = new_database(maintenance, name, template)
    try:
        migrate(url)
        with connection(url) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM jobs WHERE provider_job_id LIKE %s", (f"{BULK_PREFIX}-%",)
            )
            bulk_jobs = int(cursor.fetchone()[0])
        if bulk_jobs != BASE_JOBS:
            raise SystemExit(f"{template} has {bulk_jobs:,} bulk jobs, not {BASE_JOBS:,}")
        copy_bulk_jobs(url, copies=int(scale) - 1)
    except BaseException:
        drop_database(url)
        raise


def is_empty(url: URL) -> bool:
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('jobs') IS NULL OR NOT EXISTS (SELECT 1 FROM jobs)")
        return bool(cursor.fetchone()[0])


def table_sizes(url: URL) -> str:
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM events), "
            "(SELECT count(*) FROM job_step_completions), (SELECT count(*) FROM customers)"
        )
        jobs, events, completions, customers = cursor.fetchone()
    return (
        f"{jobs:,} jobs, {events:,} events, {completions:,} step completions, "
        f"{customers:,} customers"
    )


@contextlib.contextmanager
def recorded_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explain(engine: Any, statements: list[tuple[str, Any]]) -> tuple[list[str], bool]:
    """EXPLAIN ANALYZE of each SELECT, and whether any plan touches the events table."""
    plans, reads_events = [], False
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            reads_events = reads_events or " on events" in plan
            plans.append(plan)
        raw.rollback()
    finally:
        raw.close()
    return plans, reads_events


def admin_api_key() -> str:
    """A read key for the seeded admin, made with the app's own code."""
    from app.models import Scope
    from app.schemas.api_key import ApiKeyCreate
    from app.services import api_keys, users
    from app.services.access import Caller
    from config import config

    with config.database.SessionLocal() as session:
        admin = users.get_user_by_email(session, "admin@tracker.example")
        assert admin is not None, "the demo seed makes this admin"
        _, key = api_keys.create_api_key(
            session,
            caller=Caller(user=admin),
            key_in=ApiKeyCreate(name="analytics benchmark", scopes=[Scope.READ]),
        )
        session.commit()
    return key


def cases(customer_id: int, now: datetime) -> list[Case]:
    month_start = (now.replace(day=1) - timedelta(days=1)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    year_ago = (now - timedelta(days=365)).replace(hour=0, minute=0, second=0, microsecond=0)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        Case(
            "usage, one month, all customers",
            "/billing/usage",
            {"from": month_start.isoformat(), "to": month_end.isoformat(), "interval": "month"},
        ),
        Case(
            "usage by day, one customer, a year",
            "/billing/usage",
            {
                "from": year_ago.isoformat(),
                "to": today.isoformat(),
                "interval": "day",
                "customer_id": customer_id,
            },
        ),
        Case(
            "invoice, one customer, one month",
            "/billing/invoice",
            {"customer_id": customer_id, "period": month_start.strftime("%Y-%m")},
        ),
        Case(
            "analytics/steps, 20-step pipeline, a year",
            "/analytics/steps",
            {"tag": "image-analysis", "from": year_ago.isoformat(), "to": today.isoformat()},
        ),
        Case(
            "jobs list, one customer and status",
            "/jobs",
            {"customer_id": customer_id, "status": "completed", "limit": 50},
        ),
    ]


def roll_up() -> None:
    """Run the roll_up_periods task until it has rolled every closed day (a first run over
    bulk data rolls a year; each run does at most TASK_MAX_BATCHES days)."""
    from app.scheduled import run_task

    started, runs = time.perf_counter(), 0
    while True:
        counts = run_task("roll_up_periods")
        runs += 1
        if counts["stretches_rolled_forward"] == 0 and counts["marked_periods_rolled"] == 0:
            break
    print(f"rolled up in {time.perf_counter() - started:.1f} s ({runs} runs of roll_up_periods)")


@contextlib.contextmanager
def rollups_ignored(engine: Any) -> Iterator[None]:
    """Reads as if nothing were rolled up (every fact live), for the comparison."""
    with engine.begin() as conn:
        rolled_until = conn.execute(text("SELECT rolled_until FROM rollup_state")).scalar()
        conn.execute(text("UPDATE rollup_state SET rolled_until = NULL"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE rollup_state SET rolled_until = :at"), {"at": rolled_until})


def time_cases(
    client: Any, engine: Any, customer_id: int, repeat: int, *, plans: bool
) -> list[tuple[str, float, float, str, Any]]:
    summary: list[tuple[str, float, float, str, Any]] = []
    for case in cases(customer_id, datetime.now(UTC)):
        first = client.get(case.path, params=case.params)
        if first.status_code != 200:
            print(f"\n## {case.name}: HTTP {first.status_code}: {first.text[:300]}")
            summary.append((case.name, float("nan"), float("nan"), "error", None))
            continue
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(case.path, params=case.params)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
            assert response.json() == first.json()
        with recorded_statements(engine) as statements:
            client.get(case.path, params=case.params)
        found, reads_events = explain(engine, statements)
        median, p95 = statistics.median(timings), percentile(timings, 0.95)
        summary.append((case.name, median, p95, "YES" if reads_events else "no", first.json()))
        if plans:
            print(f"\n## {case.name}: GET {case.path} {case.params}")
            print(f"median {median:.1f} ms, p95 {p95:.1f} ms over {repeat} requests")
            for plan in found:
                print(plan)
                print()
    return summary


def time_status(app: Any, engine: Any, repeat: int) -> None:
    """GET /system/status as the seeded admin: a bearer token (the route takes no key)."""
    from fastapi.testclient import TestClient

    from seed import SEED_PASSWORD

    with TestClient(app, base_url="https://bench") as client:
        token = client.post(
            "/auth/token", data={"username": "admin@tracker.example", "password": SEED_PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        first = client.get("/system/status", headers=headers)
        assert first.status_code == 200, first.text
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            assert client.get("/system/status", headers=headers).status_code == 200
            timings.append((time.perf_counter() - started) * 1000)
        with recorded_statements(engine) as statements:
            client.get("/system/status", headers=headers)
    plans, _ = explain(engine, statements)
    # A few-row table (endpoints, marks, the state row) may be read whole: that is cheap.
    scanned = sorted({table for plan in plans for table in SEQ_SCAN.findall(plan)})
    big = [table for table in scanned if table in {"jobs", "events", "webhook_deliveries"}]
    median, p95 = statistics.median(timings), percentile(timings, 0.95)
    verdict = "ok" if p95 <= STATUS_TARGET_P95_MS and not big else "MISSED"
    print(f"\n## GET /system/status: verdict {first.json()['verdict']}")
    print(
        f"median {median:.1f} ms, p95 {p95:.1f} ms over {repeat} requests, "
        f"{len(plans)} statements, tables read whole: {', '.join(scanned) or 'none'}  {verdict}"
    )


def measure(url: URL, repeat: int) -> None:
    # The app reads its settings at import: point it at the benchmark database first.
    os.environ.update(app_env(url))
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("EVENT_RETENTION_DAYS", "400")  # the status reads its entry too
    from fastapi.testclient import TestClient

    from app.main import app
    from config import config

    engine = config.database.engine
    roll_up()
    with engine.connect() as conn:
        customer_id = conn.execute(
            text("SELECT customer_id FROM jobs GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        ).scalar_one()
    headers = {"X-API-Key": admin_api_key()}
    with TestClient(app, base_url="https://bench", headers=headers) as client:
        with rollups_ignored(engine):
            live = time_cases(client, engine, customer_id, repeat, plans=False)
        rolled = time_cases(client, engine, customer_id, repeat, plans=True)
    print("\nsummary (target: p95 <= 250 ms, no reads of the events table)")
    print(
        f"{'request':45} {'live p95':>9} {'median ms':>10} {'p95 ms':>10} {'reads events':>13}"
        f" {'same answer':>12}"
    )
    for (name, _, live_p95, _, expected), (_, median, p95, reads, answer) in zip(
        live, rolled, strict=True
    ):
        same = "yes" if answer == expected else "NO"
        verdict = "ok" if p95 <= TARGET_P95_MS and reads == "no" and same == "yes" else "MISSED"
        print(
            f"{name:45} {live_p95:9.1f} {median:10.1f} {p95:10.1f} {reads:>13} {same:>12}"
            f"  {verdict}"
        )
    time_status(app, engine, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="x 100,000 jobs (default 1)")
    parser.add_argument("--repeat", type=int, default=20, help="requests per case (default 20)")
    add_database_url(parser)
    parser.add_argument(
        "--keep", metavar="NAME", help="use (and keep) this database, seeding it only when empty"
    )
    parser.add_argument(
        "--from-template",
        metavar="SCALE1_NAME",
        help="make the --keep database from this seeded scale-1 database, then fill it to --scale",
    )
    args = parser.parse_args()
    if args.scale > 1 and not args.scale.is_integer():
        parser.error("a --scale above 1 must be a whole number (copies of the scale-1 jobs)")
    if args.from_template and not args.keep:
        parser.error("--from-template needs --keep NAME, the database it makes")
    if args.from_template and args.scale < 1:
        parser.error("--from-template makes a scale of 1 or more")

    maintenance = local_maintenance(parser, args.database_url)
    started = time.perf_counter()
    if args.keep:
        url = maintenance.set(database=args.keep)
        if args.from_template:
            if database_exists(maintenance, args.keep):
                parser.error(f"{args.keep} exists already: --from-template makes it")
            from_template(maintenance, args.keep, args.from_template, args.scale)
        else:
            if not database_exists(maintenance, args.keep):
                new_database(maintenance, args.keep)
            migrate(url)
            if is_empty(url):
                seed(url, args.scale)
        print(table_sizes(url))
        measure(url, args.repeat)
    else:
        with scratch_database(maintenance) as url:
            migrate(url)
            seed(url, args.scale)
            print(table_sizes(url))
            measure(url, args.repeat)
    print(f"total time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
