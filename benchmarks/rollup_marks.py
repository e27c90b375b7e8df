"""What the rollups' marking triggers cost a single event, on the hot path.

    .venv/bin/python -m benchmarks.rollup_marks [--events 400] [--rounds 5]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

On a scratch database, applies step events one per transaction (as the single-event route
does) through `apply_event`, in four modes, alternated round by round so that the machine's
noise falls on all of them alike: the marking triggers disabled; enabled with nothing closed
yet; enabled with yesterday closed and events of today (the usual case: nothing to mark); and
enabled with events that happened two days ago (late: each marks its quarter hour). Prints, per
mode, the median time per event and the shared buffers it touched (pg_stat_database: a count,
steadier than times), and each mode's ratio to the first. Figures are printed, never asserted.
"""

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import URL

from benchmarks.support import (
    app_env,
    describe_server,
    is_local,
    maintenance_url,
    migrate,
    scratch_database,
)

STEPS = 20
MODES = ("triggers off", "nothing closed", "closed, events on time", "closed, late events")
TRIGGERS = (
    ("jobs", "mark_rollups_on_update"),
    ("job_step_completions", "mark_rollups_on_insert"),
    ("job_step_completions", "mark_rollups_on_update"),
    ("job_step_errors", "mark_rollups_on_insert"),
    ("job_step_errors", "mark_rollups_on_update"),
)


def measure(url: URL, events: int, rounds: int) -> None:
    os.environ.update(app_env(url))
    os.environ["LOG_LEVEL"] = "WARNING"
    from app.models import Customer, EventKind, JobConfiguration
    from app.schemas.event import EventCreate
    from app.services import job_contract
    from config import config
    from tests.helpers.factories import create_configuration, create_customer, create_job

    config.setup()  # from APP_ENV and DATABASE_URL, as the app does
    new_session = config.database.SessionLocal
    with new_session() as session:
        steps = [(f"s{index}", 1, Decimal("1.5")) for index in range(STEPS)]
        configuration = create_configuration(session, steps=steps)
        customer = create_customer(session)
        session.commit()
        configuration_id, customer_id = configuration.id, customer.id

    def set_mode(mode: str) -> None:
        closed = None if mode in MODES[:2] else datetime.now(UTC) - timedelta(days=1)
        with config.database.engine.begin() as conn:
            for table, trigger in TRIGGERS:
                switch = "DISABLE" if mode == MODES[0] else "ENABLE"
                conn.execute(text(f"ALTER TABLE {table} {switch} TRIGGER {trigger}"))
            conn.execute(text("UPDATE rollup_state SET closed_until = :at"), {"at": closed})

    def buffers() -> int:
        with config.database.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT blks_hit + blks_read FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                ).scalar_one()
            )

    def run(mode: str) -> tuple[list[float], float]:
        late = mode == MODES[3]
        with new_session() as session:
            job_ids = [
                create_job(
                    session,
                    configuration=session.get_one(JobConfiguration, configuration_id),
                    customer=session.get_one(Customer, customer_id),
                ).id
                for _ in range(events // STEPS + 1)
            ]
            session.execute(text("SELECT pg_stat_force_next_flush()"))
            session.commit()
        timings = []
        before = buffers()
        with new_session() as session:
            for index in range(events):
                occurred = datetime.now(UTC) - timedelta(days=2) if late else None
                event = EventCreate(
                    kind=EventKind.STEP, name=f"s{index % STEPS}", occurred_at=occurred
                )
                started = time.perf_counter()
                job_contract.apply_event(
                    session,
                    job_contract.EventToApply(event, job_id=job_ids[index // STEPS]),
                    visible_customer_id=None,
                )
                session.commit()
                timings.append((time.perf_counter() - started) * 1000)
            session.execute(text("SELECT pg_stat_force_next_flush()"))  # counted at commit
            session.commit()
        return timings, (buffers() - before) / events

    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in random.sample(MODES, len(MODES)):
            set_mode(mode)
            timings, touched = run(mode)
            results[mode].append((statistics.median(timings), touched))
    set_mode(MODES[1])
    base_ms = statistics.median(ms for ms, _ in results[MODES[0]])
    base_buffers = statistics.median(touched for _, touched in results[MODES[0]])
    print(f"\n{events} single-event transactions per mode and round, {rounds} rounds")
    print(f"{'mode':26} {'ms/event':>9} {'ratio':>6} {'buffers/event':>14} {'ratio':>6}")
    for mode, figures in results.items():
        ms = statistics.median(value for value, _ in figures)
        touched = statistics.median(value for _, value in figures)
        print(
            f"{mode:26} {ms:9.2f} {ms / base_ms:6.2f} {touched:14.1f} {touched / base_buffers:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=400, help="events per mode and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--database-url", help="maintenance connection")
    args = parser.parse_args()
    maintenance = maintenance_url(args.database_url).set(drivername="postgresql+psycopg2")
    if not is_local(maintenance):
        parser.error("the database must be at 127.0.0.1 or behind a Unix socket (?host=/dir)")
    print(describe_server(maintenance))
    with scratch_database(maintenance) as url:
        migrate(url)
        measure(url, args.events, args.rounds)


if __name__ == "__main__":
    main()
