"""Event ingestion: the API's throughput against the same SQL sent directly with psycopg2.

    .venv/bin/python -m benchmarks.ingest [--events 3000] [--batch-size 1000]
        [--concurrency 1 8 32] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates a scratch database `tracker_bench_<random>` through the maintenance connection of
--database-url (the embedded server when the default one is unreachable), migrates it, serves the
API from it with uvicorn (one worker) and sends step events from threads of this process.

It prints events per second for single events (POST /jobs/{id}/events) at each concurrency, with
p50/p95 latency: first each worker on its own jobs, then every worker on one shared job (a third
of the events, as they serialise on the job's row lock); then for batches (POST /events/batch,
one client). Beside each figure: the baseline, the same SQL work sent with psycopg2 (one
transaction per event; for a batch, a multi-row insert and one UPDATE per job), and the ratio
API/baseline, with the targets (single events at concurrency 8: at least 0.35; batches: at least
0.5). Every answer other than the expected 2xx is counted and shown; figures are printed, never
asserted. The server is stopped and the scratch database dropped at the end, whatever happens.
"""

import argparse
import contextlib
import hashlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import IO, Any, Generic, TypeVar

import httpx2 as httpx
import psycopg2
import psycopg2.extras
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from app.internal.api_key_format import digest, display_prefix, generate_api_key
from app.models import (
    ApiKey,
    Customer,
    JobConfiguration,
    JobConfigurationStep,
    Role,
    Scope,
    User,
)
from app.schemas.job import JobCreate
from app.services.access import Caller
from app.services.jobs import create_job
from benchmarks.support import (
    DEFAULT_MAINTENANCE_URL,
    LOCALHOST,
    app_env,
    connection,
    describe_server,
    is_local,
    maintenance_url,
    migrate,
    scratch_database,
)
from config.database import Database
from root import ROOT_DIR

TAG = "bench"
STEP_COUNT = 20
TARGET_CONCURRENCY = 8
SINGLE_TARGET = 0.35
BATCH_TARGET = 0.5
WARM_UP_EVENTS = 40
SAMPLES_PER_PROBLEM = 3
SERVER_START_TIMEOUT_S = 60.0
# The benchmark authenticates with the API key only: no password hashes to this.
NO_PASSWORD_HASH = "!benchmark-no-password"  # noqa: S105

ItemT = TypeVar("ItemT")
ChannelT = TypeVar("ChannelT")


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
Plan = list[list[ItemT]]  # one list of items per worker


@dataclass(frozen=True)
class Scenario(Generic[ItemT]):
    """The same events for the API and for the baseline, on different jobs."""

    workers: int
    api: Plan[ItemT]
    sql: Plan[ItemT]


@dataclass
class Tally:
    """What one worker (or, merged, a whole run) saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    batch_items: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, problem: str, detail: str) -> None:
        self.problems[problem] += 1
        samples = self.samples.setdefault(problem, [])
        if len(samples) < SAMPLES_PER_PROBLEM:
            samples.append(detail)

    def merge(self, other: "Tally") -> None:
        self.latencies.extend(other.latencies)
        self.statuses.update(other.statuses)
        self.batch_items.update(other.batch_items)
        self.problems.update(other.problems)
        for problem, samples in other.samples.items():
            mine = self.samples.setdefault(problem, [])
            mine.extend(samples[: SAMPLES_PER_PROBLEM - len(mine)])


@dataclass(frozen=True)
class Measurement:
    events: int
    seconds: float
    tally: Tally

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def latency_ms(self, fraction: float) -> float:
        ordered = sorted(self.tally.latencies)
        return ordered[round(fraction * (len(ordered) - 1))] * 1000


# Data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    api_key: str
    steps: list[Step]


class JobMaker:
    """Creates jobs with the app's own service, as POST /jobs would."""

    def __init__(self, session: Session, *, caller: Caller, customer_id: int) -> None:
        self._session = session
        self._caller = caller
        self._customer_id = customer_id
        self._made = 0

    def take(self, count: int) -> list[int]:
        ids = []
        for _ in range(count):
            self._made += 1
            job_in = JobCreate(
                provider_job_id=f"bench-{self._made:06d}", tag=TAG, customer_id=self._customer_id
            )
            job, _ = create_job(self._session, caller=self._caller, job_in=job_in)
            ids.append(job.id)
        return ids


def add_owner(session: Session) -> tuple[Caller, int, str]:
    """A customer, an admin and an API key for the admin; answers the key's plaintext."""
    customer = Customer(name="Benchmark Hospital")
    admin = User(
        email="bench-admin@tracker.example",
        first_name="Bench",
        last_name="Admin",
        password_hash=NO_PASSWORD_HASH,
        role=Role.ADMIN,
    )
    session.add_all([customer, admin])
    session.flush()
    plaintext = generate_api_key()
    session.add(
        ApiKey(
            user_id=admin.id,
            name="Benchmark",
            prefix=display_prefix(plaintext),
            digest=digest(plaintext),
            scopes=[Scope.INGEST, Scope.READ],
        )
    )
    return Caller(user=admin), customer.id, plaintext


def add_configuration(session: Session) -> list[Step]:
    rows = [
        JobConfigurationStep(
            position=position,
            tag=f"s{position + 1:02d}",
            name=f"Step {position + 1}",
            points=position + 1,
            cost=Decimal(position + 1) / 4,
        )
        for position in range(STEP_COUNT)
    ]
    session.add(
        JobConfiguration(
            tag=TAG,
            version=1,
            name="Benchmark pipeline",
            content_hash=hashlib.sha256(b"benchmark pipeline").hexdigest(),
            step_count=len(rows),
            total_points=sum(row.points for row in rows),
            total_cost=sum((row.cost for row in rows), Decimal(0)),
            steps=rows,
        )
    )
    session.flush()
    return [Step(row.id, row.tag, row.points, row.cost) for row in rows]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if part < total % parts else 0) for part in range(parts)]


def on_own_jobs(
    jobs: JobMaker, steps: list[Step], events: int, workers: int, label: str
) -> Plan[PlannedEvent]:
    """Each worker completes the steps of its own jobs one after the other."""
    plan: Plan[PlannedEvent] = []
    for worker, count in enumerate(split(events, workers)):
        ids = jobs.take(math.ceil(count / len(steps)))
        plan.append(
            [
                PlannedEvent(ids[i // len(steps)], steps[i % len(steps)], f"{label}-{worker}-{i}")
                for i in range(count)
            ]
        )
    return plan


def shared_events(events: int) -> int:
    """A third: events serialised on one row lock are slow, and more would say nothing new."""
    return max(1, events // 3)


def on_shared_job(
    jobs: JobMaker, steps: list[Step], events: int, workers: int, label: str
) -> Plan[PlannedEvent]:
    """Every worker sends events for the same job, its steps dealt round-robin."""
    (job_id,) = jobs.take(1)
    sequence = [PlannedEvent(job_id, steps[i % len(steps)], f"{label}-{i}") for i in range(events)]
    return [sequence[worker::workers] for worker in range(workers)]


def in_batches(
    jobs: JobMaker, steps: list[Step], events: int, size: int, label: str
) -> Plan[Batch]:
    """One client sends the events of consecutive jobs, `size` a request."""
    (sequence,) = on_own_jobs(jobs, steps, events, 1, label)
    return [[sequence[start : start + size] for start in range(0, len(sequence), size)]]


def scenario(make: Callable[[str], Plan[ItemT]], workers: int, label: str) -> Scenario[ItemT]:
    return Scenario(workers, api=make(f"api-{label}"), sql=make(f"sql-{label}"))


@dataclass(frozen=True)
class Scenarios:
    warm_up: Scenario[PlannedEvent]
    warm_up_batch: Scenario[Batch]
    own: list[Scenario[PlannedEvent]]
    shared: list[Scenario[PlannedEvent]]
    batch: Scenario[Batch]

    def api_job_ids(self) -> set[int]:
        singles = [self.warm_up, *self.own, *self.shared]
        ids = {event.job_id for s in singles for plan in s.api for event in plan}
        batches = [self.warm_up_batch, self.batch]
        ids |= {e.job_id for s in batches for plan in s.api for batch in plan for e in batch}
        return ids


def populate(url: URL, args: argparse.Namespace) -> tuple[Fixture, Scenarios]:
    database = Database(url, null_pool=True)
    try:
        with database.SessionLocal() as session:
            caller, customer_id, api_key = add_owner(session)
            steps = add_configuration(session)
            jobs = JobMaker(session, caller=caller, customer_id=customer_id)
            n, size = args.events, args.batch_size
            scenarios = Scenarios(
                warm_up=scenario(partial(on_own_jobs, jobs, steps, WARM_UP_EVENTS, 1), 1, "w"),
                warm_up_batch=scenario(
                    partial(in_batches, jobs, steps, WARM_UP_EVENTS, size), 1, "wb"
                ),
                own=[
                    scenario(partial(on_own_jobs, jobs, steps, n, c), c, f"o{c}")
                    for c in args.concurrency
                ],
                shared=[
                    scenario(partial(on_shared_job, jobs, steps, shared_events(n), c), c, f"s{c}")
                    for c in args.concurrency
                    if c > 1
                ],
                batch=scenario(partial(in_batches, jobs, steps, n, size), 1, "b"),
            )
            session.commit()
    finally:
        database.dispose()
    return Fixture(api_key=api_key, steps=steps), scenarios


# Running ----------------------------------------------------------------------------------------


def measure(
    plan: Plan[ItemT],
    open_channel: Callable[[], AbstractContextManager[ChannelT]],
    send: Callable[[ChannelT, ItemT, Tally], None],
    events: int,
) -> Measurement:
    """Run one thread per worker, all starting together once connected; time until the last
    worker is done."""
    barrier = threading.Barrier(len(plan) + 1, timeout=120)

    def work(items: list[ItemT]) -> Tally:
        tally = Tally()
        try:
            with open_channel() as channel:
                barrier.wait()
                for item in items:
                    started = time.perf_counter()
                    send(channel, item, tally)
                    tally.latencies.append(time.perf_counter() - started)
        except BaseException:
            barrier.abort()
            raise
        return tally

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        futures = [pool.submit(work, items) for items in plan]
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raise_first_error(futures)
            raise
        started = time.perf_counter()
        tallies = [future.result() for future in futures]
        seconds = time.perf_counter() - started
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return Measurement(events, seconds, total)


def raise_first_error(futures: Sequence[Future[Tally]]) -> None:
    """Surface the worker error that broke the barrier rather than the broken barrier."""
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None and not isinstance(error, threading.BrokenBarrierError):
            raise error


@dataclass(frozen=True)
class Server:
    base_url: str
    log: IO[bytes]

    def warnings(self) -> list[str]:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").splitlines()
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [line for line in lines if any(mark in line for mark in marks)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(url: URL, app: str = "app.main:app") -> Iterator[Server]:
    """uvicorn with one worker on a free local port, until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", LOCALHOST]
    command += ["--port", str(port), "--workers", "1", "--no-access-log"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=ROOT_DIR, env=app_env(url), stdout=log, stderr=subprocess.STDOUT
        )
        server = Server(f"http://{LOCALHOST}:{port}", log)
        try:
            wait_until_ready(server, process)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                server.log.seek(0)
                output = server.log.read().decode(errors="replace")
                raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{output}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == httpx.codes.OK:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer /health within {SERVER_START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def api_client(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": api_key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120, trust_env=False) as client:
        client.get("/health").raise_for_status()  # connected before the clock starts
        yield client


def event_body(event: PlannedEvent) -> dict[str, Any]:
    return {"kind": "step", "name": event.step.tag, "event_id": event.event_id}


def post(client: httpx.Client, path: str, body: dict[str, Any], tally: Tally) -> Any:
    """POST and count the answer; answers the JSON body of a 2xx, else None."""
    route = path if path.startswith("/events") else "/jobs/{id}/events"
    try:
        response = client.post(path, json=body)
    except httpx.HTTPError as error:
        tally.note(f"POST {route} raised", repr(error))
        return None
    tally.statuses[response.status_code] += 1
    if not response.is_success:
        tally.note(f"POST {route} -> {response.status_code}", response.text[:1000])
        return None
    if response.status_code != expected_status(route):
        # 200 for a single event is the answer to a replayed event_id: none is replayed here.
        tally.note(f"POST {route} -> {response.status_code}", response.text[:1000])
    return response.json()


def expected_status(route: str) -> int:
    return httpx.codes.OK if route == "/events/batch" else httpx.codes.CREATED


def post_event(client: httpx.Client, event: PlannedEvent, tally: Tally) -> None:
    post(client, f"/jobs/{event.job_id}/events", event_body(event), tally)


def post_batch(client: httpx.Client, batch: Batch, tally: Tally) -> None:
    items = [{"job_id": event.job_id, **event_body(event)} for event in batch]
    answer = post(client, "/events/batch", {"events": items}, tally)
    if answer is None:
        return
    for result in answer["results"]:
        tally.batch_items[result["result"]] += 1
        if result["result"] != "created":
            tally.note(f"batch item {result['result']}", str(result)[:1000])


LOCK_JOB = """
    SELECT customer_id, configuration_id, coalesce(last_step_completed_at, created_at), created_at
    FROM jobs WHERE id = %s FOR UPDATE
"""
INSERT_EVENT = """
    INSERT INTO events (job_id, kind, step_id, step_tag, event_id, received_at)
    VALUES (%s, 'step', %s, %s, %s, now())
    RETURNING id
"""
INSERT_EVENTS = """
    INSERT INTO events (job_id, kind, step_id, step_tag, event_id, received_at) VALUES %s
"""
INSERT_EVENTS_ROW = "(%s, 'step', %s, %s, %s, now())"
INSERT_COMPLETION = """
    INSERT INTO job_step_completions
        (job_id, step_id, customer_id, configuration_id, event_id, completed_at, points, cost,
         job_created_at, seconds_since_previous)
    VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, extract(epoch FROM now() - %s))
    ON CONFLICT DO NOTHING
    RETURNING job_id
"""
UPDATE_JOB = """
    UPDATE jobs SET
        event_count = event_count + %(events)s,
        steps_completed = steps_completed + %(steps)s,
        completed_points = completed_points + %(points)s,
        cost = cost + %(cost)s,
        started_at = coalesce(started_at, now()),
        last_event_at = now(),
        last_step_completed_at = (CASE WHEN %(steps)s > 0 THEN now()
                                  ELSE last_step_completed_at END),
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


def commit_or_note(conn: Any, tally: Tally, work: Callable[[Any], None]) -> None:
    try:
        with conn.cursor() as cursor:
            work(cursor)
        conn.commit()
    except psycopg2.Error as error:
        conn.rollback()
        tally.note("baseline SQL failed", repr(error))


def sql_event(conn: Any, event: PlannedEvent, tally: Tally) -> None:
    """What the API does for one event, as plain SQL in one transaction."""

    def work(cursor: Any) -> None:
        cursor.execute(LOCK_JOB, (event.job_id,))
        customer_id, configuration_id, previous, created_at = cursor.fetchone()
        step = event.step
        cursor.execute(INSERT_EVENT, (event.job_id, step.id, step.tag, event.event_id))
        (row_id,) = cursor.fetchone()
        completion = (
            customer_id,
            configuration_id,
            row_id,
            step.points,
            step.cost,
            created_at,
            previous,
        )
        cursor.execute(INSERT_COMPLETION, (event.job_id, step.id, *completion))
        first = cursor.fetchone() is not None
        update_job(cursor, event.job_id, 1, [step] if first else [])

    commit_or_note(conn, tally, work)


def sql_batch(conn: Any, batch: Batch, tally: Tally) -> None:
    """A batch as a multi-row insert of its events and one UPDATE per job."""

    def work(cursor: Any) -> None:
        rows = [(e.job_id, e.step.id, e.step.tag, e.event_id) for e in batch]
        psycopg2.extras.execute_values(
            cursor, INSERT_EVENTS, rows, template=INSERT_EVENTS_ROW, page_size=len(rows)
        )
        by_job: defaultdict[int, list[Step]] = defaultdict(list)
        for event in batch:
            by_job[event.job_id].append(event.step)
        for job_id in sorted(by_job):
            steps = by_job[job_id]
            update_job(cursor, job_id, len(steps), list({step.id: step for step in steps}.values()))

    commit_or_note(conn, tally, work)


# Report -----------------------------------------------------------------------------------------


def ratio(api: Measurement, sql: Measurement) -> float:
    return api.rate / sql.rate


def single_row(workers: int, api: Measurement, sql: Measurement) -> str:
    figures = [
        f"{m.rate:9.1f} {m.latency_ms(0.5):8.2f} {m.latency_ms(0.95):8.2f}" for m in (api, sql)
    ]
    return f"{workers:7d}   {figures[0]}   {figures[1]}   {ratio(api, sql):7.2f}"


SINGLE_HEADER = "workers    API ev/s   p50 ms   p95 ms    SQL ev/s   p50 ms   p95 ms   API/SQL"


def target_line(name: str, value: float | None, target: float) -> str:
    if value is None:
        return f"  {name}: not measured"
    verdict = "met" if value >= target else "NOT met"
    return f"  {name}: API/SQL {value:.2f} (target >= {target}): {verdict}"


def report_answers(single: Tally, batch: Tally, server: Server, sql: Tally) -> None:
    def statuses(tally: Tally) -> str:
        return ", ".join(f"{code} x {count}" for code, count in sorted(tally.statuses.items()))

    items = ", ".join(f"{kind} {count}" for kind, count in sorted(batch.batch_items.items()))
    print("answers (warm-up included):")
    print(f"  POST /jobs/{{id}}/events: {statuses(single)}")
    print(f"  POST /events/batch: {statuses(batch)}; items: {items}")
    problems = Tally()
    for tally in (single, batch, sql):
        problems.merge(tally)
    if not problems.problems:
        print("non-2xx answers and other problems: none")
    for problem, count in sorted(problems.problems.items()):
        print(f"PROBLEM {problem}: {count} times; first answers:")
        for sample in problems.samples[problem]:
            print(f"    {sample}")
    lines = server.warnings()
    print(f"server log: {len(lines)} lines at WARNING or above")
    for line in lines[:5]:
        print(f"    {line[:300]}")


AGGREGATE_CHECK = """
    SELECT count(*) FILTER (WHERE j.event_count <> e.events
                            OR j.steps_completed <> c.steps
                            OR j.completed_points <> c.points
                            OR j.cost <> c.cost
                            OR (j.status = 'completed') <> (c.steps = j.step_count)),
           count(*)
    FROM jobs j
    CROSS JOIN LATERAL (SELECT count(*) AS events FROM events WHERE job_id = j.id) e
    CROSS JOIN LATERAL (
        SELECT count(*) AS steps, coalesce(sum(points), 0) AS points,
               coalesce(sum(cost), 0) AS cost
        FROM job_step_completions WHERE job_id = j.id
    ) c
    WHERE j.id = ANY(%s)
"""


def check_aggregates(url: URL, job_ids: set[int]) -> None:
    """Each API job's counters against its stored events and completions (printed only)."""
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(AGGREGATE_CHECK, (sorted(job_ids),))
        wrong, checked = cursor.fetchone()
    print(f"aggregate check: {checked} API jobs, {wrong} whose counters disagree with their rows")


def run(args: argparse.Namespace, url: URL, server_description: str) -> None:
    migrate(url)
    fixture, scenarios = populate(url, args)
    database = url.database
    print(f"{server_description}, scratch database {database}")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the run")
    print(
        f"{args.events} events per measurement, batches of {args.batch_size}, "
        f"{len(fixture.steps)}-step jobs; SQL = the same work sent directly with psycopg2"
    )
    with serve(url) as server:
        singles, batches, sql_total = Tally(), Tally(), Tally()

        def open_api() -> AbstractContextManager[httpx.Client]:
            return api_client(server.base_url, fixture.api_key)

        def open_sql() -> AbstractContextManager[Any]:
            return connection(url)

        def single(s: Scenario[PlannedEvent]) -> tuple[Measurement, Measurement]:
            events = sum(len(items) for items in s.api)
            api = measure(s.api, open_api, post_event, events)
            sql = measure(s.sql, open_sql, sql_event, events)
            singles.merge(api.tally)
            sql_total.merge(sql.tally)
            return api, sql

        def batch(s: Scenario[Batch], events: int) -> tuple[Measurement, Measurement]:
            api = measure(s.api, open_api, post_batch, events)
            sql = measure(s.sql, open_sql, sql_batch, events)
            batches.merge(api.tally)
            sql_total.merge(sql.tally)
            return api, sql

        single(scenarios.warm_up)
        batch(scenarios.warm_up_batch, WARM_UP_EVENTS)

        at_target: float | None = None
        own: dict[int, Measurement] = {}
        print("\nsingle events, each worker on its own jobs (POST /jobs/{id}/events)")
        print(SINGLE_HEADER)
        for s in scenarios.own:
            api, sql = single(s)
            own[s.workers] = api
            print(single_row(s.workers, api, sql), flush=True)
            if s.workers == TARGET_CONCURRENCY:
                at_target = ratio(api, sql)

        if scenarios.shared:
            print(
                f"\nsingle events, every worker on one shared job (serialised by its row lock; "
                f"{shared_events(args.events)} events)"
            )
            print(SINGLE_HEADER)
        for s in scenarios.shared:
            api, sql = single(s)
            print(single_row(s.workers, api, sql), flush=True)

        print(
            f"\nbatches of {args.batch_size}, one client (POST /events/batch; "
            "SQL: execute_values insert + one UPDATE per job)"
        )
        api, sql = batch(scenarios.batch, args.events)
        print("  API ev/s  ms/batch    SQL ev/s  ms/batch   API/SQL")
        print(
            f"{api.rate:10.1f} {api.latency_ms(0.5):9.1f}  {sql.rate:10.1f} "
            f"{sql.latency_ms(0.5):9.1f}   {ratio(api, sql):7.2f}"
        )

        print("\ntargets")
        print(target_line(f"single events, {TARGET_CONCURRENCY} workers", at_target, SINGLE_TARGET))
        print(target_line("batches", ratio(api, sql), BATCH_TARGET))
        print()
        report_answers(singles, batches, server, sql_total)
    check_aggregates(url, scenarios.api_job_ids())
    measure_ceiling(url, fixture, scenarios.own, own)


def measure_ceiling(
    url: URL, fixture: Fixture, plans: list[Scenario[PlannedEvent]], api: dict[int, Measurement]
) -> None:
    """The same single-event load on an empty route of the same shape: what one uvicorn worker
    of this framework can answer at all, whatever the route does."""
    print(
        "\nthe framework's ceiling: the same load on an empty route of the same shape "
        "(benchmarks/empty_app.py, no database), served the same way"
    )
    print("workers  empty req/s   p50 ms   p95 ms   API/empty")
    tally = Tally()
    with serve(url, "benchmarks.empty_app:app") as server:
        for s in plans:
            events = sum(len(items) for items in s.api)
            empty = measure(
                s.api, lambda: api_client(server.base_url, fixture.api_key), post_event, events
            )
            tally.merge(empty.tally)
            print(
                f"{s.workers:7d}  {empty.rate:11.1f} {empty.latency_ms(0.5):8.2f} "
                f"{empty.latency_ms(0.95):8.2f}   {api[s.workers].rate / empty.rate:9.2f}",
                flush=True,
            )
    for problem, count in sorted(tally.problems.items()):
        print(f"PROBLEM (empty route) {problem}: {count} times; first: {tally.samples[problem][0]}")


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop uvicorn and drop the database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help=f"maintenance connection to a local server (default: {DEFAULT_MAINTENANCE_URL}, "
        "else the embedded server)",
    )
    parser.add_argument("--events", type=int, default=3000, help="events per measurement")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    if args.events < 1 or min(args.concurrency) < 1 or not 1 <= args.batch_size <= 1000:
        parser.error("--events and --concurrency must be positive, --batch-size 1 to 1000")
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    started = time.perf_counter()
    # The driver the app ships (SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://).
    maintenance = maintenance_url(args.database_url).set(drivername="postgresql+psycopg2")
    if not is_local(maintenance):
        parser.error("the database must be at 127.0.0.1 or behind a Unix socket (?host=/dir)")
    description = describe_server(maintenance)
    with scratch_database(maintenance) as url:
        run(args, url, description)
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
