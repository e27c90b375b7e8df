"""For benchmarks.retention: the load that runs during an operation (an inserter, a reader, a
lock monitor), the phases it is measured in, and what each waited for."""

import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from sqlalchemy.engine import URL

from benchmarks.retention_data import STEPS, cursor_on, log
from benchmarks.support import (
    percentile,
)

INSERT_EVERY_S = 0.010
READ_EVERY_S = 0.020
POLL_EVERY_S = 0.025
BASELINE_S = 5.0

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
