"""What the trackerapi client costs a script, against the API served locally by uvicorn.

Prints the caller's cost per `job.step()` in background mode (target: under 50 microseconds),
and the events per second one script thread gets delivered in background and in sync mode.

    .venv/bin/python -m benchmarks.client [--events N] [--sync-events M] [--database URL]

The database is a scratch one on the given server (default: this checkout's embedded one),
dropped afterwards.
"""

import argparse
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from app.internal.api_key_format import digest, display_prefix, generate_api_key
from app.models import ApiKey, Customer, Role, Scope, User
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.services import job_configurations
from benchmarks.support import migrate, scratch_database, serve
from config.database import Database
from root import root_path
from trackerapi import Tracker

TAG = "bench-pipeline"
STEPS = [f"s{n:02d}" for n in range(1, 21)]


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


def caller_cost(base_url: str, key: str, spool: Path, events: int) -> None:
    tracker = Tracker(key, base_url, spool=spool, max_queue=events + 10)
    job = tracker.job("bench-caller", tag=TAG)
    samples: list[float] = []
    began = time.perf_counter()
    for n in range(events):
        start = time.perf_counter_ns()
        job.step(STEPS[n % len(STEPS)])
        samples.append((time.perf_counter_ns() - start) / 1000)
    queued = time.perf_counter() - began
    assert tracker.flush(timeout=600), "not every event was delivered"
    delivered = time.perf_counter() - began
    tracker.close()
    samples.sort()
    print(
        f"background job.step(), caller's cost over {events:,} calls: "
        f"mean {sum(samples) / events:.1f} us, median {statistics.median(samples):.1f} us, "
        f"p99 {samples[int(events * 0.99)]:.1f} us (target: under 50 us)"
    )
    print(
        f"background delivery: {events:,} events queued in {queued:.2f} s, delivered in "
        f"{delivered:.2f} s: {events / delivered:,.0f} events/s"
    )


def sync_rate(base_url: str, key: str, spool: Path, events: int) -> None:
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
    parser.add_argument("--events", type=int, default=20_000, help="background (default 20,000)")
    parser.add_argument("--sync-events", type=int, default=500, help="sync (default 500)")
    parser.add_argument("--database", help="a maintenance URL (default: the embedded server)")
    args = parser.parse_args()
    if args.database:
        maintenance = make_url(args.database)
    else:
        from config.embedded import embedded_database_url

        maintenance = embedded_database_url(root_path(".data/postgres"), "postgres")
    with scratch_database(maintenance) as url, tempfile.TemporaryDirectory() as scratch:
        migrate(url)
        key = add_caller(url)
        with serve(url, LOG_LEVEL="WARNING") as server:
            base_url = server.base_url
            spool = Path(scratch) / "spool.sqlite3"
            caller_cost(base_url, key, spool, args.events)
            sync_rate(base_url, key, spool, args.sync_events)


if __name__ == "__main__":
    main()
