"""Copies of the bulk jobs (the analytics benchmark above scale 1): each job's state as the job
contract left it, with new ids and every time moved earlier."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import seed
from app.internal.periods import Interval
from app.models import Event, Job, JobStepCompletion, JobStepError, WebhookDelivery
from app.scheduled import run_task
from app.schemas.billing import Usage
from app.services import billing
from app.services.access import Caller
from benchmarks.copies import copy_bulk_jobs
from config import config
from tests.helpers.factories import create_admin
from tests.helpers.rollups import live

STATE = [
    "customer_id", "configuration_id", "status", "step_count", "steps_completed", "total_points",
    "completed_points", "progress", "cost", "event_count", "error_count",
    "unresolved_error_count",
]  # fmt: skip
TIMES = [
    "created_at", "updated_at", "started_at", "last_event_at", "completed_at", "cancelled_at",
    "last_step_completed_at", "deadline_at",
]  # fmt: skip


def count(db: Session, model: type[Job | Event | WebhookDelivery]) -> int:
    return db.execute(select(func.count()).select_from(model)).scalar_one()


def moved(at: datetime | None, earlier: timedelta) -> datetime | None:
    return None if at is None else at - earlier


def step_rows(db: Session, job_id: int, earlier: timedelta) -> list[tuple[object, ...]]:
    """What a job's completions, errors, events and outbox say, times moved `earlier` back."""
    completions = db.scalars(select(JobStepCompletion).where(JobStepCompletion.job_id == job_id))
    errors = db.scalars(select(JobStepError).where(JobStepError.job_id == job_id))
    events = db.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.id))
    deliveries = db.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
    return sorted(
        [
            *(
                ("completion", row.step_id, row.points, row.cost, row.seconds_since_previous,
                 moved(row.completed_at, earlier), moved(row.job_created_at, earlier))
                for row in completions
            ),
            *(
                ("error", row.step_id, row.error_count, row.step_completed,
                 moved(row.first_error_at, earlier), moved(row.last_error_at, earlier))
                for row in errors
            ),
            *(
                ("event", event.kind, event.step_id, event.event_id,
                 moved(event.received_at, earlier), moved(event.resolved_at, earlier))
                for event in events
            ),
            *(
                ("delivery", row.endpoint_id, row.event_type, row.status,
                 moved(row.created_at, earlier))
                for row in deliveries
            ),
        ],
        key=repr,
    )  # fmt: skip


@pytest.mark.usefixtures("committed")
def test_copies_keep_each_bulk_jobs_state_with_new_ids_and_earlier_times(db: Session) -> None:
    seed.seed_db()  # the demo jobs (not copied) and a webhook endpoint that queues notifications
    seed.seed_bulk(jobs=30, events_per_job=22, customer_count=3, months=2, seed=7)
    sources = db.scalars(select(Job).where(Job.provider_job_id.startswith("bulk-"))).all()
    largest = {
        model: db.execute(select(func.max(model.id))).scalar_one()
        for model in (Job, Event, WebhookDelivery)
    }
    demo_jobs = count(db, Job) - len(sources)
    assert count(db, WebhookDelivery)

    copy_bulk_jobs(config.database.url, copies=2)

    assert count(db, Job) == demo_jobs + 3 * len(sources)
    for k in (1, 2):
        earlier = timedelta(minutes=k)
        for source in sources:
            copy = db.get_one(Job, source.id + k * largest[Job])
            assert copy.provider_job_id == f"bulk-{copy.id}"
            assert [getattr(copy, name) for name in STATE] == [
                getattr(source, name) for name in STATE
            ]
            assert [getattr(copy, name) for name in TIMES] == [
                moved(getattr(source, name), earlier) for name in TIMES
            ]
            assert step_rows(db, copy.id, timedelta(0)) == step_rows(db, source.id, earlier)
    # Each completion still names the event that completed it, of its own job.
    assert not db.scalar(
        select(func.count())
        .select_from(JobStepCompletion)
        .join(Event, Event.id == JobStepCompletion.event_id)
        .where(
            (Event.job_id != JobStepCompletion.job_id)
            | (Event.step_id != JobStepCompletion.step_id)
        )
    )
    # The next ids come after the copies'.
    for model, table in ((Job, "jobs"), (Event, "events"), (WebhookDelivery, "webhook_deliveries")):
        next_id = db.scalar(text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"))
        assert next_id > db.scalar(select(func.max(model.id)))


def roll_up_everything() -> None:
    while True:
        counts = run_task("roll_up_periods")
        if counts["stretches_rolled_forward"] == 0 and counts["marked_periods_rolled"] == 0:
            return


@pytest.mark.usefixtures("committed")
def test_rolled_up_usage_counts_the_copies_once_rolled_up_again(db: Session) -> None:
    seed.seed_bulk(jobs=30, events_per_job=22, customer_count=3, months=2, seed=7)
    roll_up_everything()
    caller = Caller(create_admin(db))
    now = datetime.now(UTC)

    def usage() -> Usage:
        return billing.get_usage(
            db, caller=caller, start=now - timedelta(days=90), end=now, interval=Interval.MONTH
        )

    before = usage()

    copy_bulk_jobs(config.database.url, copies=1)
    roll_up_everything()

    after = usage()
    assert after == live(db, usage)
    assert after.totals.cost == 2 * before.totals.cost
    assert after.totals.steps_completed == 2 * before.totals.steps_completed
