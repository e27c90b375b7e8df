"""Event ingestion: the API against the same rows written directly with psycopg2.

    .venv/bin/python -m benchmarks.ingest [--events 2000] [--concurrency 1 8] [--batch-size 1000]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--scratch-prefix NAME]

On a scratch database (made through the maintenance connection of --database-url, else the
embedded server; dropped at the end), with data made by the app's own services, it prints:

- single events (POST /jobs/{id}/events), each worker thread on its own jobs, at each
  concurrency: events/s, p50/p95 latency, the server process's CPU time per event and its
  PostgreSQL sessions' CPU time per event, beside the baseline (the same rows, event, step
  completion and job update, sent with psycopg2 in one transaction per event; its sessions'
  CPU time too) and the ratio API/baseline;
- batches (POST /events/batch, one client) against a raw multi-row insert of the same rows,
  with both sides' PostgreSQL CPU time per event;
- the database's own work per single event in one warm session each way, API and baseline:
  executor time, shared buffers touched and WAL bytes (benchmarks/event_work.py), the figures
  a shared machine does not move;
- through a proxy that counts them: database round trips per single event (commit included)
  and per batch, and new database sessions per request at the highest concurrency;
- the median server time of one event through the Lambda handler (`app.main.handler`), at
  concurrency 1, in a process of its own;
- whether every job's counters agree with its stored rows.

Figures are printed, never asserted.
"""

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx2 as httpx
from sqlalchemy.engine import URL

from app.models import Role, Scope
from app.schemas.api_key import ApiKeyCreate
from app.schemas.customer import CustomerCreate
from app.schemas.job import JobCreate
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.services import api_keys, customers, job_configurations, jobs, users
from app.services.access import Caller
from benchmarks.baseline import Batch, PlannedEvent, Step, sql_batch, sql_event
from benchmarks.event_work import EventWork, per_event_work
from benchmarks.support import (
    DEFAULT_MAINTENANCE_URL,
    CountingProxy,
    Server,
    app_env,
    backend_cpu_seconds,
    connection,
    describe_server,
    is_local,
    maintenance_url,
    migrate,
    percentile,
    scratch_database,
    serve,
)
from config import config
from root import ROOT_DIR

STEP_COUNT = 20
SINGLE_TARGET, BATCH_TARGET = 0.35, 0.5
EXPLAINED_EVENTS = 200
WARM_UP_EVENTS = 100
LAMBDA_EVENTS = 200

ItemT = TypeVar("ItemT")


# Data, made through the services -----------------------------------------------------------------


class Data:
    """An admin's API key, a 20-step configuration, and new jobs on demand."""

    def __init__(self, url: URL) -> None:
        # The services read the settings (password hashing): configure the app for `url`.
        os.environ.update(app_env(url))
        config.setup("development")
        self._session = config.database.SessionLocal()
        session = self._session
        customer = customers.create_customer(
            session, customer_in=CustomerCreate(name="Benchmark Hospital")
        )
        admin = users.add_user(
            session,
            email="bench-admin@tracker.example",
            first_name="Bench",
            last_name="Admin",
            password=os.urandom(16).hex(),
            role=Role.ADMIN,
            customer_id=None,
        )
        self._caller, self._customer_id = Caller(user=admin), customer.id
        configuration, _ = job_configurations.create_configuration(
            session,
            config_in=JobConfigurationCreate(
                tag="bench",
                name="Benchmark pipeline",
                steps=[
                    JobConfigurationStepCreate(
                        tag=f"s{n:02d}", name=f"Step {n}", points=n, cost=Decimal(n) / 4
                    )
                    for n in range(1, STEP_COUNT + 1)
                ],
            ),
        )
        session.refresh(configuration, ["steps"])
        self.steps = [Step(s.id, s.tag, s.points, s.cost) for s in configuration.steps]
        _, self.api_key = api_keys.create_api_key(
            session,
            caller=self._caller,
            key_in=ApiKeyCreate(name="Benchmark", scopes=[Scope.INGEST, Scope.READ]),
        )
        session.commit()
        self._made = 0

    def new_jobs(self, count: int) -> list[int]:
        ids = []
        for _ in range(count):
            self._made += 1
            job_in = JobCreate(
                provider_job_id=f"bench-{self._made:06d}",
                tag="bench",
                customer_id=self._customer_id,
            )
            job, _ = jobs.create_job(self._session, caller=self._caller, job_in=job_in)
            ids.append(job.id)
        self._session.commit()
        return ids

    def per_worker(self, events: int, workers: int, label: str) -> list[list[PlannedEvent]]:
        """Each worker completes the steps of its own jobs, one after the other."""
        plans = []
        for worker in range(workers):
            count = events // workers + (1 if worker < events % workers else 0)
            ids = self.new_jobs(math.ceil(count / STEP_COUNT))
            plans.append(
                [
                    PlannedEvent(ids[i // STEP_COUNT], self.steps[i % STEP_COUNT], f"{label}-{i}")
                    for i in range(count)
                ]
            )
        return plans

    def batches(self, events: int, size: int, label: str) -> list[list[Batch]]:
        """One client sends the events of consecutive jobs, `size` a request."""
        [sequence] = self.per_worker(events, 1, label)
        return [[sequence[start : start + size] for start in range(0, len(sequence), size)]]

    def close(self) -> None:
        self._session.close()
        config.database.dispose()


# Running -----------------------------------------------------------------------------------------


@dataclass
class Measurement:
    events: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)
    server_cpu_s: float | None = None
    database_cpu_s: float | None = None  # the server's PostgreSQL backends

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def latency_ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000

    @property
    def cpu_ms_per_event(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.events * 1000

    @property
    def database_cpu_ms_per_event(self) -> float | None:
        if self.database_cpu_s is None:
            return None
        return self.database_cpu_s / self.events * 1000


Channel = Any
Send = Callable[[Channel, ItemT], str | None]  # answers a problem, or None


def measure(
    plans: Sequence[Sequence[ItemT]],
    open_channel: Callable[[], AbstractContextManager[Channel]],
    send: Send[ItemT],
    events: int,
    server: Server | None = None,
    backends: Callable[[], dict[int, float]] | None = None,
) -> Measurement:
    """One thread per plan, all starting together once connected; timed until the last ends.
    `server`: the app's process, whose CPU time is measured; `backends`: the CPU time of the
    PostgreSQL sessions that do the work, by process id."""
    started_together = threading.Barrier(len(plans) + 1, timeout=120)
    finished = threading.Barrier(len(plans) + 1)
    measured = threading.Event()
    result = Measurement(events)

    def work(items: Sequence[ItemT]) -> None:
        try:
            with open_channel() as channel:
                started_together.wait()
                for item in items:
                    started = time.perf_counter()
                    problem = send(channel, item)
                    result.latencies.append(time.perf_counter() - started)
                    if problem:
                        result.problems[problem] += 1
                finished.wait()
                measured.wait()  # the session stays open until its CPU time is read
        except BaseException:
            started_together.abort()
            finished.abort()
            raise

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        futures = [pool.submit(work, items) for items in plans]
        try:
            started_together.wait()
            cpu_before = server.cpu_seconds() if server else 0.0
            backends_before = backends() if backends else {}
            started = time.perf_counter()
            finished.wait()
            result.seconds = time.perf_counter() - started
            if server is not None:
                result.server_cpu_s = server.cpu_seconds() - cpu_before
            backends_after = backends() if backends else {}
            if backends_after:
                result.database_cpu_s = sum(
                    used - backends_before.get(pid, 0.0) for pid, used in backends_after.items()
                )
        except threading.BrokenBarrierError:
            pass  # a worker failed: its error is raised below
        finally:
            measured.set()
            for future in futures:
                future.result()
    return result


@contextmanager
def api_client(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": api_key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120, trust_env=False) as client:
        client.get("/health").raise_for_status()  # connected before the clock starts
        yield client


def event_body(event: PlannedEvent) -> dict[str, Any]:
    return {"kind": "step", "name": event.step.tag, "event_id": event.event_id}


def post_event(client: httpx.Client, event: PlannedEvent) -> str | None:
    response = client.post(f"/jobs/{event.job_id}/events", json=event_body(event))
    return None if response.status_code == 201 else f"event -> {response.status_code}"


def post_batch(client: httpx.Client, batch: Batch) -> str | None:
    items = [{"job_id": event.job_id, **event_body(event)} for event in batch]
    response = client.post("/events/batch", json={"events": items})
    if response.status_code != 200:
        return f"batch -> {response.status_code}"
    if response.json()["created"] != len(batch):
        return "batch items not created"
    return None


# Accounting: round trips and sessions, through a counting proxy -----------------------------------


@dataclass(frozen=True)
class Accounting:
    round_trips_per_event: float
    round_trips_per_batch: float
    sessions_per_request: float
    workers: int


def account(url: URL, data: Data, args: argparse.Namespace) -> Accounting:
    workers = max(args.concurrency)
    proxy = CountingProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        with serve(proxy.url_for(url)) as server:
            warm_up = data.per_worker(WARM_UP_EVENTS * workers // 4, workers, "acct-w")
            measure(warm_up, lambda: api_client(server.base_url, data.api_key), post_event, 0)
            events = max(args.events // 4, workers * 10)
            plans = data.per_worker(events, workers, "acct")
            proxy.reset()
            measure(plans, lambda: api_client(server.base_url, data.api_key), post_event, events)
            round_trips, sessions = proxy.round_trips, proxy.sessions
            batches = data.batches(args.batch_size * 2, args.batch_size, "acct-b")
            proxy.reset()
            measure(batches, lambda: api_client(server.base_url, data.api_key), post_batch, 0)
            batch_trips = proxy.round_trips / len(batches[0])
    finally:
        proxy.close()
    return Accounting(round_trips / events, batch_trips, sessions / events, workers)


@dataclass(frozen=True)
class HandlerFigures:
    """One event at a time through the Lambda handler: medians, and threads started per event."""

    elapsed_ms: float
    cpu_ms: float
    threads_per_event: float


def lambda_handler_figures(url: URL, data: Data) -> HandlerFigures:
    """One event at a time through `app.main.handler`, as a Lambda instance serves them."""
    [plan] = data.per_worker(LAMBDA_EVENTS, 1, "lambda")
    lines = [f"{event.job_id} {event.step.tag} {event.event_id}" for event in plan]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.lambda_event", data.api_key],
        input="\n".join(lines),
        cwd=ROOT_DIR,
        env={**app_env(url), "LAMBDA_MODE": "true", "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed_ms, cpu_ms, threads = result.stdout.strip().splitlines()[-1].split()
    return HandlerFigures(float(elapsed_ms), float(cpu_ms), float(threads))


# Report ------------------------------------------------------------------------------------------

AGGREGATE_CHECK = """
    SELECT count(*) FILTER (WHERE j.event_count <> e.events OR j.steps_completed <> c.steps
                            OR j.completed_points <> c.points OR j.cost <> c.cost
                            OR (j.status = 'completed') <> (c.steps = j.step_count)),
           count(*)
    FROM jobs j
    CROSS JOIN LATERAL (SELECT count(*) AS events FROM events WHERE job_id = j.id) e
    CROSS JOIN LATERAL (
        SELECT count(*) AS steps, coalesce(sum(points), 0) AS points,
               coalesce(sum(cost), 0) AS cost
        FROM job_step_completions WHERE job_id = j.id) c
    WHERE j.event_count > 0
"""


def analyze(url: URL) -> None:
    """Statistics for the new tables, as a running database has them (autovacuum would take a
    minute): the sessions' cached plans are made again from them."""
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("ANALYZE")


def check_aggregates(url: URL) -> str:
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(AGGREGATE_CHECK)
        wrong, checked = cursor.fetchone()
    return f"{checked} jobs with events, {wrong} whose counters disagree with their rows"


def hot_updates(url: URL) -> str:
    """How many updates of `jobs` rows were HOT (no index entry written: none of the columns
    they changed is indexed, and the page had room)."""
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
        )
        updates, hot = cursor.fetchone()
    return f"{updates} updates of jobs rows, {hot} HOT ({hot / max(updates, 1):.0%})"


def verdict(value: float, target: float, *, at_most: bool = False) -> str:
    met = value <= target if at_most else value >= target
    return "met" if met else "NOT met"


def target(label: str, value: float, goal: float, *, at_most: bool = False) -> None:
    sign = "<=" if at_most else ">="
    print(f"  {label} {value:.2f} ({sign} {goal:g}): {verdict(value, goal, at_most=at_most)}")


def known(value: float | None) -> float:
    return math.nan if value is None else value


def print_event_work(api: EventWork, raw: EventWork) -> None:
    ratio = api.ratio(raw)
    print(
        f"\ndatabase work per single step event, one warm session each way, median of "
        f"{EXPLAINED_EVENTS} (EXPLAIN (ANALYZE, BUFFERS, WAL))"
    )
    print("                    API      raw   API/raw")
    for label, mine, theirs, each in (
        ("executor ms", api.executor_ms, raw.executor_ms, ratio.executor_ms),
        ("shared buffers", api.buffers, raw.buffers, ratio.buffers),
        ("WAL bytes", api.wal_bytes, raw.wal_bytes, ratio.wal_bytes),
    ):
        print(f"  {label:14s} {mine:9.3f} {theirs:8.3f} {each:9.2f}")


def run(args: argparse.Namespace, url: URL) -> None:
    migrate(url)
    data = Data(url)
    problems: Counter[str] = Counter()
    raw_backends = lambda: backend_cpu_seconds(url, "tracker-bench")  # noqa: E731
    try:
        singles: dict[int, tuple[Measurement, Measurement]] = {}
        with serve(url) as server:
            open_api = lambda: api_client(server.base_url, data.api_key)  # noqa: E731
            open_sql = lambda: connection(url)  # noqa: E731
            measure(data.per_worker(WARM_UP_EVENTS, 1, "w"), open_api, post_event, 0)
            analyze(url)
            print("\nsingle events, each worker on its own jobs (POST /jobs/{id}/events)")
            print(
                "workers   API ev/s  p50 ms  p95 ms  CPU ms/ev  DB CPU ms/ev   SQL ev/s  p50 ms"
                "  DB CPU ms/ev   API/SQL"
            )
            for workers in args.concurrency:
                api_plan = data.per_worker(args.events, workers, f"api{workers}")
                sql_plan = data.per_worker(args.events, workers, f"sql{workers}")
                api = measure(
                    api_plan, open_api, post_event, args.events, server,
                    server.backend_cpu_seconds,
                )  # fmt: skip
                sql = measure(sql_plan, open_sql, sql_event, args.events, None, raw_backends)
                singles[workers] = api, sql
                problems.update(api.problems + sql.problems)
                print(
                    f"{workers:7d} {api.rate:10.1f} {api.latency_ms(0.5):7.2f} "
                    f"{api.latency_ms(0.95):7.2f} {api.cpu_ms_per_event:10.2f} "
                    f"{known(api.database_cpu_ms_per_event):13.2f} {sql.rate:10.1f} "
                    f"{sql.latency_ms(0.5):7.2f} {known(sql.database_cpu_ms_per_event):13.2f}"
                    f" {api.rate / sql.rate:9.2f}",
                    flush=True,
                )
            api_batches = data.batches(args.events, args.batch_size, "api-b")
            sql_batches = data.batches(args.events, args.batch_size, "sql-b")
            api_b = measure(
                api_batches, open_api, post_batch, args.events, server, server.backend_cpu_seconds
            )
            sql_b = measure(sql_batches, open_sql, sql_batch, args.events, None, raw_backends)
            problems.update(api_b.problems + sql_b.problems)
            print(f"\nbatches of {args.batch_size}, one client (POST /events/batch)")
            print(
                "  API ev/s  ms/batch  CPU ms/ev  DB CPU ms/ev    SQL ev/s  ms/batch  DB CPU ms/ev"
                "   API/SQL"
            )
            print(
                f"{api_b.rate:10.1f} {api_b.latency_ms(0.5):9.1f} {api_b.cpu_ms_per_event:10.3f} "
                f"{known(api_b.database_cpu_ms_per_event):13.3f} "
                f"{sql_b.rate:11.1f} {sql_b.latency_ms(0.5):9.1f} "
                f"{known(sql_b.database_cpu_ms_per_event):13.3f} "
                f"{api_b.rate / sql_b.rate:9.2f}",
                flush=True,
            )
            log_lines = server.warnings()
        [explained_api] = data.per_worker(EXPLAINED_EVENTS, 1, "explain-api")
        [explained_raw] = data.per_worker(EXPLAINED_EVENTS, 1, "explain-raw")
        api_work, raw_work = per_event_work(url, explained_api, explained_raw)
        accounting = account(url, data, args)
        handler = lambda_handler_figures(url, data)
    finally:
        data.close()

    print_event_work(api_work, raw_work)
    print("\nround trips and sessions (through a counting proxy)")
    print(
        f"  round trips per single event, commit included: {accounting.round_trips_per_event:.2f}"
    )
    print(f"  round trips per batch: {accounting.round_trips_per_batch:.2f}")
    print(
        f"  new database sessions per request at {accounting.workers} workers: "
        f"{accounting.sessions_per_request:.3f}"
    )
    print(
        f"\nLambda handler, one event at a time: median {handler.elapsed_ms:.2f} ms of server "
        f"time ({handler.cpu_ms:.2f} ms of CPU), {handler.threads_per_event:.2f} threads started "
        "per event"
    )

    print("\ntargets")
    if 1 in singles:
        database_cpu = known(singles[1][0].database_cpu_ms_per_event)
        target("PostgreSQL CPU ms per single event, 1 worker", database_cpu, 1.2, at_most=True)
    ratio = api_work.ratio(raw_work)
    target("database time per single event, API/raw", ratio.executor_ms, 2.5, at_most=True)
    target("shared buffers per single event, API/raw", ratio.buffers, 1.5, at_most=True)
    target("WAL bytes per single event, API/raw", ratio.wal_bytes, 1.2, at_most=True)
    batch_cpu = known(api_b.database_cpu_ms_per_event) / (
        sql_b.database_cpu_ms_per_event or math.nan
    )
    target("PostgreSQL CPU per event in batches, API/raw", batch_cpu, 2, at_most=True)
    for workers in sorted({1, 8} & set(singles)):
        ratio_of_rates = singles[workers][0].rate / singles[workers][1].rate
        target(f"single events, {workers} workers, API/SQL", ratio_of_rates, SINGLE_TARGET)
    cpu = min(api.cpu_ms_per_event or math.inf for api, _ in singles.values())
    target("server CPU ms per single event", cpu, 1.5, at_most=True)
    target("round trips per single event", accounting.round_trips_per_event, 3, at_most=True)
    target("batches, API/SQL", api_b.rate / sql_b.rate, BATCH_TARGET)
    target("new sessions per request", accounting.sessions_per_request, 0, at_most=True)

    print(f"\nproblems: {dict(problems) or 'none'}")
    print(f"server log: {len(log_lines)} lines at WARNING or above")
    for line in log_lines[:5]:
        print(f"    {line[:300]}")
    print(f"aggregate check: {check_aggregates(url)}")
    print(f"jobs rows: {hot_updates(url)}")


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop uvicorn and drop the database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help=f"maintenance connection to a local server (default: {DEFAULT_MAINTENANCE_URL}, "
        "else the embedded server)",
    )
    parser.add_argument("--events", type=int, default=2000, help="events per measurement")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--scratch-prefix", default="tracker_bench", help="name prefix of the scratch database"
    )
    args = parser.parse_args()
    if args.events < 1 or min(args.concurrency) < 1 or not 1 <= args.batch_size <= 1000:
        parser.error("--events and --concurrency must be positive, --batch-size 1 to 1000")
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    started = time.perf_counter()
    # The driver the app ships (SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://).
    maintenance = maintenance_url(args.database_url).set(drivername="postgresql+psycopg2")
    if not is_local(maintenance) or not maintenance.host:
        parser.error("the database must be a PostgreSQL server at 127.0.0.1 (TCP, for the proxy)")
    print(f"{describe_server(maintenance)}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{args.events} events per measurement, {STEP_COUNT}-step jobs")
    with scratch_database(maintenance, args.scratch_prefix) as url:
        run(args, url)
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
