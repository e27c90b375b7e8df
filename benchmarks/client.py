"""What the trackerapi client costs a program, against the API served locally by uvicorn.

Prints the caller's cost per `job.step()` in background mode (median, mean, p99, p99.9), with
1 and with 8 threads stepping at once while the sender drains to the server, and the same for
`AsyncTracker` from 1 and from 100 tasks (targets: median <= 10 us, p99 <= 50 us at 8
threads); then the events per second one script thread gets delivered in sync mode. A baseline
times a pure-Python call of about a microsecond from 8 threads with no tracker at all: what the
interpreter's lock alone adds to the mean and the tail when threads run Python at once.

    .venv/bin/python -m benchmarks.client [--events N] [--rounds R] [--compare SRC]
        [--sync-events M] [--database URL]

Each measurement runs in a process of its own. `--compare SRC` measures the trackerapi package
found in the directory SRC as well (an older release's `src`, say: `git archive`), alternating
with this checkout's round by round, so that both meet the same machine load. The database is
a scratch one on the given server (default: this checkout's embedded one), dropped afterwards.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from app.internal.api_key_format import digest, display_prefix, generate_api_key
from app.models import ApiKey, Customer, Role, Scope, User
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.services import job_configurations
from benchmarks.support import migrate, percentile, scratch_database, serve
from config.database import Database
from root import ROOT_DIR, root_path

TAG = "bench-pipeline"
STEPS = [f"s{n:02d}" for n in range(1, 21)]
SCENARIOS = [("threads", 1), ("threads", 8), ("tasks", 1), ("tasks", 100), ("baseline", 8)]


def add_caller(url: URL) -> str:
    """A client user with an ingest key and the 20-step configuration; answers the key."""
    database = Database(url)
    try:
        with Session(database.engine) as session:
            customer = Customer(name="Benchmark Hospital")
            session.add(customer)
            session.flush()
            user = User(
                email="bench@tracker.example",
                first_name="Bench",
                last_name="Client",
                password_hash="!",  # noqa: S106 (no password: it never logs in)
                role=Role.CLIENT,
                customer_id=customer.id,
            )
            session.add(user)
            session.flush()
            key = generate_api_key()
            session.add(
                ApiKey(
                    user_id=user.id,
                    name="bench",
                    prefix=display_prefix(key),
                    digest=digest(key),
                    scopes=[Scope.INGEST, Scope.READ],
                )
            )
            steps = [
                JobConfigurationStepCreate(tag=tag, name=tag, points=1, cost=Decimal("0.5"))
                for tag in STEPS
            ]
            job_configurations.create_configuration(
                session, config_in=JobConfigurationCreate(tag=TAG, name="Bench", steps=steps)
            )
            session.commit()
    finally:
        database.dispose()
    return key


# The measurements, each run in a child process (`--measure`) -----------------------------------


def step_threads(base_url: str, key: str, spool: Path, threads: int, events: int) -> Any:
    """`events` job.step() calls shared by `threads` threads, each on a job of its own; the
    nanoseconds of each call, as its thread saw them."""
    from trackerapi import Tracker

    each = events // threads
    # Room for every event: the caller's cost is measured, not the wait for a full queue.
    tracker = Tracker(key, base_url, spool=spool, max_queue=events + 10)
    run = uuid.uuid4().hex[:8]
    jobs = [tracker.job(f"bench-{run}-{n}", tag=TAG) for n in range(threads)]
    samples: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def stepper(n: int) -> None:
        job, out, clock = jobs[n], samples[n], time.perf_counter_ns
        start.wait()
        for i in range(each):
            began = clock()
            job.step(STEPS[i % len(STEPS)])
            out.append(clock() - began)

    workers = [threading.Thread(target=stepper, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    queued = time.perf_counter() - began
    assert tracker.flush(timeout=600), "not every event was delivered"
    delivered = time.perf_counter() - began
    tracker.close()
    return [value for part in samples for value in part], queued, delivered


def baseline_threads(threads: int, events: int) -> Any:
    """The same threads timing a pure-Python call of about a microsecond, with no tracker: what
    the interpreter's lock alone adds when several threads run Python at once (a thread
    switched out in the middle of a call waits for the others' turns, up to 5 ms each)."""
    each = events // threads
    samples: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def call(tag: str) -> tuple[str, datetime, str]:
        moment = datetime.now(UTC)
        return tag, moment, f"{id(moment):032x}"

    def stepper(n: int) -> None:
        out, clock = samples[n], time.perf_counter_ns
        start.wait()
        for i in range(each):
            began = clock()
            call(STEPS[i % len(STEPS)])
            out.append(clock() - began)

    workers = [threading.Thread(target=stepper, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    return [value for part in samples for value in part], elapsed, elapsed


def step_tasks(base_url: str, key: str, spool: Path, tasks: int, events: int) -> Any:
    """The same with AsyncTracker: `tasks` tasks on one event loop, each yielding to the others
    after every step (as a task doing I/O between steps would)."""
    from trackerapi import AsyncTracker

    each = events // tasks

    async def measure() -> Any:
        tracker = AsyncTracker(key, base_url, spool=spool, max_queue=events + 10)
        run = uuid.uuid4().hex[:8]
        jobs = [await tracker.job(f"bench-{run}-{n}", tag=TAG) for n in range(tasks)]
        samples: list[list[int]] = [[] for _ in range(tasks)]

        async def stepper(n: int) -> None:
            job, out, clock = jobs[n], samples[n], time.perf_counter_ns
            for i in range(each):
                began = clock()
                await job.step(STEPS[i % len(STEPS)])
                out.append(clock() - began)
                await asyncio.sleep(0)

        began = time.perf_counter()
        await asyncio.gather(*(stepper(n) for n in range(tasks)))
        queued = time.perf_counter() - began
        assert await tracker.flush(timeout=600), "not every event was delivered"
        delivered = time.perf_counter() - began
        await tracker.aclose()
        return [value for part in samples for value in part], queued, delivered

    return asyncio.run(measure())


def measure(args: argparse.Namespace) -> None:
    """One scenario, in this process; prints its figures as JSON."""
    kind, callers = args.measure.split(":")
    spool = Path(args.spool)
    if kind == "baseline":
        nanoseconds, queued, delivered = baseline_threads(int(callers), args.events)
    elif kind == "tasks":
        nanoseconds, queued, delivered = step_tasks(
            args.url, args.key, spool, int(callers), args.events
        )
    else:
        nanoseconds, queued, delivered = step_threads(
            args.url, args.key, spool, int(callers), args.events
        )
    micro = [value / 1000 for value in nanoseconds]
    print(
        json.dumps(
            {
                "median": statistics.median(micro),
                "mean": statistics.fmean(micro),
                "p99": percentile(micro, 0.99),
                "p999": percentile(micro, 0.999),
                "max": max(micro),
                "events": len(micro),
                "queued_s": queued,
                "delivered_s": delivered,
            }
        )
    )


# The driver ---------------------------------------------------------------------------------------


def run_child(
    scenario: tuple[str, int], source: str | None, base_url: str, key: str, spool: Path, events: int
) -> dict[str, Any]:
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = os.pathsep.join([source, environment.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        "benchmarks.client",
        "--measure",
        f"{scenario[0]}:{scenario[1]}",
    ]
    command += ["--url", base_url, "--key", key, "--spool", str(spool), "--events", str(events)]
    done = subprocess.run(
        command, cwd=ROOT_DIR, env=environment, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def describe(label: str, figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"  {label:<28} {figures['error']}"
    return (
        f"  {label:<28} median {figures['median']:6.1f}  mean {figures['mean']:6.1f}  "
        f"p99 {figures['p99']:7.1f}  p99.9 {figures['p999']:8.1f}  max {figures['max']:9.1f}  "
        f"({figures['events']:,} calls; queued in {figures['queued_s']:.2f} s, "
        f"delivered in {figures['delivered_s']:.2f} s: "
        f"{figures['events'] / figures['delivered_s']:,.0f} ev/s)"
    )


def sync_rate(base_url: str, key: str, spool: Path, events: int) -> None:
    from trackerapi import Tracker

    tracker = Tracker(key, base_url, mode="sync", spool=spool)
    job = tracker.job("bench-sync", tag=TAG)
    began = time.perf_counter()
    for n in range(events):
        job.step(STEPS[n % len(STEPS)])
    elapsed = time.perf_counter() - began
    tracker.close()
    print(
        f"sync delivery: {events:,} events one by one in {elapsed:.2f} s: "
        f"{events / elapsed:,.0f} events/s ({elapsed / events * 1000:.1f} ms each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="per scenario (40,000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every scenario (1)")
    parser.add_argument("--compare", help="the directory of another trackerapi package")
    parser.add_argument("--sync-events", type=int, default=500, help="sync (default 500)")
    parser.add_argument("--database", help="a maintenance URL (default: the embedded server)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--spool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return
    if args.database:
        maintenance = make_url(args.database)
    else:
        from config.embedded import embedded_database_url

        maintenance = embedded_database_url(root_path(".data/postgres"), "postgres")
    sources: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.compare:
        sources.append((f"compared ({args.compare})", str(Path(args.compare).resolve())))
    with scratch_database(maintenance) as url, tempfile.TemporaryDirectory() as scratch:
        migrate(url)
        key = add_caller(url)
        with serve(url, LOG_LEVEL="WARNING") as server:
            print(f"job.step() in the caller, microseconds ({os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.1f} at the start)")  # fmt: skip
            for round_number in range(1, args.rounds + 1):
                for kind, callers in SCENARIOS:
                    for label, source in sources:
                        if (kind == "tasks" and not _has_async(source)) or (
                            kind == "baseline" and source is not None
                        ):
                            continue
                        spool = Path(scratch) / f"spool-{uuid.uuid4().hex[:6]}.sqlite3"
                        # The baseline's calls cost a third of a step's: ten times as many
                        # keep it running about as long.
                        calls = args.events * (10 if kind == "baseline" else 1)
                        figures = run_child(
                            (kind, callers), source, server.base_url, key, spool, calls
                        )
                        name = f"{callers} {kind[:-1] if callers == 1 else kind}, {label}"
                        if kind == "baseline":
                            name = f"{callers} threads, no tracker"
                        print(f"round {round_number}" + describe(name, figures), flush=True)
            sync_rate(server.base_url, key, Path(scratch) / "sync.sqlite3", args.sync_events)


def _has_async(source: str | None) -> bool:
    if source is None:
        return True
    return "AsyncTracker" in (Path(source) / "trackerapi" / "__init__.py").read_text()


if __name__ == "__main__":
    main()
