"""The retention policy's service: old raw events are deleted in bounded batches, oldest first,
never an unresolved error, and each job records what went without changing anything else."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Event, EventKind, Job, JobConfiguration, JobStatus
from app.schemas.event import EventCreate
from app.services import events, job_contract, retention
from app.services.access import Caller
from tests.helpers.factories import create_admin, create_configuration, create_customer, create_job

STEPS = (("a", 1, Decimal("1.0000")), ("b", 2, Decimal("2.5000")), ("c", 3, Decimal("0.2500")))
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
CUTOFF = NOW - timedelta(days=30)


@pytest.fixture
def configuration(db: Session) -> JobConfiguration:
    return create_configuration(db, steps=STEPS)


@pytest.fixture
def job(db: Session, configuration: JobConfiguration) -> Job:
    return create_job(db, configuration=configuration, customer=create_customer(db), created_at=OLD)


def report(
    db: Session,
    job: Job,
    kind: EventKind,
    name: str | None = None,
    *,
    at: datetime,
    event_id: str | None = None,
) -> int:
    """An event the server received at `at` (replayed, as the seed does); answers its id."""
    event = EventCreate(kind=kind, name=name, event_id=event_id)
    [applied] = job_contract.apply_events(
        db,
        [job_contract.EventToApply(event, job_id=job.id, received_at=at)],
        visible_customer_id=None,
    )
    assert applied.result == "created", applied
    assert applied.event_id is not None
    return applied.event_id


def remaining(db: Session, job: Job) -> list[tuple[EventKind, str | None, datetime]]:
    return [
        (row.kind, row.step_tag, row.received_at)
        for row in db.execute(
            select(Event.kind, Event.step_tag, Event.received_at)
            .where(Event.job_id == job.id)
            .order_by(Event.id)
        )
    ]


def prune(db: Session, *, cutoff: datetime = CUTOFF, limit: int = 1000) -> list[int]:
    """A whole run of batches of `limit`; answers each batch's count."""
    pruning = retention.start_pruning(db, cutoff=cutoff)
    counts = []
    while True:
        counts.append(retention.prune_batch(db, pruning=pruning, limit=limit))
        if counts[-1] < limit:
            return counts


def snapshot(db: Session, job: Job) -> dict[str, object]:
    """What billing, analytics, lists and the contract read from the job row."""
    db.refresh(job)
    columns = (
        "status", "progress", "completed_points", "steps_completed", "cost", "event_count",
        "error_count", "unresolved_error_count", "started_at", "last_event_at", "completed_at",
        "last_step_completed_at", "deadline_at", "updated_at", "created_at",
    )  # fmt: skip
    return {name: getattr(job, name) for name in columns}


def test_without_a_retention_period_there_is_no_cutoff() -> None:
    assert retention.retention_cutoff(now=NOW, retention_days=None) is None
    assert retention.retention_cutoff(now=NOW, retention_days=30) == CUTOFF


def test_only_events_received_before_the_cutoff_go_and_unresolved_errors_stay(
    db: Session, job: Job
) -> None:
    report(db, job, EventKind.STEP, "a", at=OLD)
    report(db, job, EventKind.INFO, at=OLD)
    report(db, job, EventKind.ERROR, "c", at=OLD)  # resolved below, then pruned
    report(db, job, EventKind.STEP, "c", at=OLD + timedelta(minutes=1))
    report(db, job, EventKind.ERROR, "b", at=OLD + timedelta(minutes=2))  # stays open
    report(db, job, EventKind.ERROR, at=OLD + timedelta(minutes=3))  # no step: open too
    recent = NOW - timedelta(days=1)
    report(db, job, EventKind.INFO, at=recent)
    before = snapshot(db, job)
    assert before["status"] == JobStatus.FAILED

    assert prune(db) == [4]

    assert remaining(db, job) == [
        (EventKind.ERROR, "b", OLD + timedelta(minutes=2)),
        (EventKind.ERROR, None, OLD + timedelta(minutes=3)),
        (EventKind.INFO, None, recent),
    ]
    assert snapshot(db, job) == before  # updated_at included: lists sort by it
    assert (job.events_pruned_count, job.events_pruned_before) == (4, CUTOFF)


def test_a_kept_error_is_still_resolved_by_a_later_step_event(db: Session, job: Job) -> None:
    report(db, job, EventKind.STEP, "a", at=OLD)
    report(db, job, EventKind.ERROR, "b", at=OLD)
    prune(db)
    assert job.unresolved_error_count == 1

    report(db, job, EventKind.STEP, "b", at=NOW)
    db.refresh(job)
    assert (job.status, job.unresolved_error_count) == (JobStatus.RUNNING, 0)
    [error] = db.scalars(select(Event).where(Event.job_id == job.id, Event.kind == EventKind.ERROR))
    assert error.resolved_at == NOW


def test_batches_are_bounded_and_go_oldest_first(db: Session, job: Job) -> None:
    ids = [report(db, job, EventKind.INFO, at=OLD + timedelta(seconds=n)) for n in range(5)]
    pruning = retention.start_pruning(db, cutoff=CUTOFF)
    assert retention.prune_batch(db, pruning=pruning, limit=2) == 2
    assert db.scalars(select(Event.id).where(Event.job_id == job.id)).all() == ids[2:]
    assert retention.prune_batch(db, pruning=pruning, limit=2) == 2
    assert retention.prune_batch(db, pruning=pruning, limit=2) == 1
    assert retention.prune_batch(db, pruning=pruning, limit=2) == 0
    db.refresh(job)
    assert job.events_pruned_count == 5


def test_a_second_run_finds_nothing_and_changes_nothing(db: Session, job: Job) -> None:
    for tag in ("a", "b", "c"):
        report(db, job, EventKind.STEP, tag, at=OLD)
    assert prune(db) == [3]
    after_first = snapshot(db, job), job.events_pruned_count, job.events_pruned_before
    assert prune(db) == [0]
    assert (snapshot(db, job), job.events_pruned_count, job.events_pruned_before) == after_first


def test_a_later_run_moves_the_recorded_cutoff_and_adds_to_the_count(db: Session, job: Job) -> None:
    report(db, job, EventKind.INFO, at=OLD)
    report(db, job, EventKind.INFO, at=CUTOFF + timedelta(days=5))
    assert prune(db) == [1]
    later = CUTOFF + timedelta(days=10)
    assert prune(db, cutoff=later) == [1]
    db.refresh(job)
    assert (job.events_pruned_count, job.events_pruned_before) == (2, later)


def test_every_job_counts_its_own_pruned_events(
    db: Session, configuration: JobConfiguration
) -> None:
    customer = create_customer(db)
    jobs = [create_job(db, configuration=configuration, customer=customer) for _ in range(3)]
    for n, job in enumerate(jobs):
        for _ in range(n + 1):
            report(db, job, EventKind.INFO, at=OLD)
    untouched = create_job(db, configuration=configuration, customer=customer)
    report(db, untouched, EventKind.INFO, at=NOW)
    assert prune(db, limit=4) == [4, 2]
    for job in (*jobs, untouched):
        db.refresh(job)
    assert [job.events_pruned_count for job in jobs] == [1, 2, 3]
    assert (untouched.events_pruned_count, untouched.events_pruned_before) == (0, None)


def test_the_first_id_received_since_a_time_is_found_by_bisection(db: Session, job: Job) -> None:
    assert retention.first_id_received_since(db, cutoff=NOW) == 0  # no events at all
    ids = [report(db, job, EventKind.INFO, at=OLD + timedelta(hours=n)) for n in range(9)]
    for n, event_id in enumerate(ids):
        cutoff = OLD + timedelta(hours=n)
        assert retention.first_id_received_since(db, cutoff=cutoff) == event_id
    assert retention.first_id_received_since(db, cutoff=OLD + timedelta(hours=9)) == ids[-1] + 1


def test_a_retry_of_a_pruned_event_is_stored_anew_and_counts_its_step_once(
    db: Session, job: Job
) -> None:
    admin = Caller(user=create_admin(db))
    report(db, job, EventKind.STEP, "a", at=OLD, event_id="a-1")
    prune(db)
    before = snapshot(db, job)

    _, _, created = events.record_event(
        db,
        caller=admin,
        job_id=job.id,
        event_in=EventCreate(kind=EventKind.STEP, name="a", event_id="a-1"),
    )
    assert created  # its event_id went with it
    after = snapshot(db, job)
    changed = {name for name, value in after.items() if before[name] != value}
    assert changed == {"event_count", "last_event_at", "updated_at"}
    assert after["event_count"] == before["event_count"] + 1  # type: ignore[operator]
