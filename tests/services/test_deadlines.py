"""Deadlines, stalled jobs and ETAs: the deadline the database keeps with every event, learnt
from a version's history where no step timeout is set; the sweep; the ETA."""

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import (
    Customer,
    EventKind,
    Job,
    JobConfiguration,
    JobStatus,
    JobStepTiming,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.scheduled import TaskRun
from app.scheduled import sweep_deadlines as sweep_task
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import deadlines, job_contract, webhooks
from app.services.access import Caller
from app.services.deadlines import LearntWait
from app.services.job_details import job_detail
from app.services.jobs import cancel_job, create_job
from config import config
from tests.helpers.factories import create_admin, create_configuration, create_customer, unique

STEPS = (("a", 1, Decimal("1")), ("b", 1, Decimal("2")), ("c", 1, Decimal("3")))
# Learnt from as few as 5 samples here; the settings' default asks for more.
POLICY = LearntWait(quantile=0.99, factor=2.0, floor_seconds=60, min_samples=5)


def new_job(db: Session, configuration: JobConfiguration, customer: Customer) -> Job:
    job, _ = create_job(
        db,
        caller=Caller(user=create_admin(db)),
        job_in=JobCreate(
            provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
        ),
    )
    return job


def report(
    db: Session,
    job: Job,
    kind: EventKind,
    name: str | None,
    *,
    at: datetime,
    occurred_at: datetime | None = None,
) -> None:
    """An event the server received at `at` (replayed, as the seed does)."""
    event = EventCreate(kind=kind, name=name, occurred_at=occurred_at)
    [applied] = job_contract.apply_events(
        db,
        [job_contract.EventToApply(event, job_id=job.id, received_at=at)],
        visible_customer_id=None,
    )
    assert applied.result == "created", applied
    db.refresh(job)


def seed_history(
    db: Session, configuration: JobConfiguration, durations: dict[str, Sequence[float]]
) -> None:
    """Completed jobs whose steps took these many seconds each (from the step before, or from
    the job's creation for the first)."""
    customer = create_customer(db)
    runs = len(next(iter(durations.values())))
    for run in range(runs):
        job = new_job(db, configuration, customer)
        at = job.created_at
        for tag, seconds in durations.items():
            at += timedelta(seconds=seconds[run])
            report(db, job, EventKind.STEP, tag, at=at, occurred_at=at)
        assert job.status == JobStatus.COMPLETED


def test_a_new_job_has_the_earliest_of_its_start_and_job_timeouts(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, start_timeout=600, job_timeout=3600)
    job = new_job(db, configuration, create_customer(db))
    assert job.deadline_at == job.created_at + timedelta(seconds=600)

    only_job_timeout = create_configuration(db, steps=STEPS, job_timeout=3600)
    other = new_job(db, only_job_timeout, create_customer(db))
    assert other.deadline_at == other.created_at + timedelta(seconds=3600)

    no_timeouts = new_job(db, create_configuration(db, steps=STEPS), create_customer(db))
    assert no_timeouts.deadline_at is None


def test_every_event_moves_the_deadline_a_heartbeat_too(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, start_timeout=60, step_timeout=300)
    job = new_job(db, configuration, create_customer(db))
    first = job.created_at + timedelta(seconds=30)
    report(db, job, EventKind.STEP, "a", at=first)
    assert job.deadline_at == first + timedelta(seconds=300)

    heartbeat = first + timedelta(seconds=250)
    report(db, job, EventKind.INFO, None, at=heartbeat)
    assert job.status == JobStatus.RUNNING
    assert job.deadline_at == heartbeat + timedelta(seconds=300)


def test_the_job_timeout_caps_every_later_deadline(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, step_timeout=300, job_timeout=400)
    job = new_job(db, configuration, create_customer(db))
    report(db, job, EventKind.INFO, None, at=job.created_at + timedelta(seconds=200))
    assert job.deadline_at == job.created_at + timedelta(seconds=400)


def test_a_finished_job_has_no_deadline(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, step_timeout=300)
    job = new_job(db, configuration, create_customer(db))
    at = job.created_at
    for tag in ("a", "b", "c"):
        report(db, job, EventKind.STEP, tag, at=at)
    assert (job.status, job.deadline_at) == (JobStatus.COMPLETED, None)

    failed = new_job(db, configuration, create_customer(db))
    report(db, failed, EventKind.ERROR, "a", at=at)
    assert (failed.status, failed.deadline_at) == (JobStatus.FAILED, None)


def test_without_a_step_timeout_the_wait_is_learnt_from_the_versions_history(
    db: Session,
) -> None:
    configuration = create_configuration(db, steps=STEPS)
    # Step b took 100, 200, 300, 400 and 500 seconds. Its p99 (interpolated, as PostgreSQL's
    # percentile_cont does) is at rank 0.99 * 4 = 3.96: 400 + 0.96 * 100 = 496 s; times the
    # factor 2: 992 s.
    seed_history(
        db,
        configuration,
        {"a": [10, 10, 10, 10, 10], "b": [100, 200, 300, 400, 500], "c": [5, 5, 5, 5, 5]},
    )
    job = new_job(db, configuration, create_customer(db))
    at = job.created_at + timedelta(seconds=10)
    report(db, job, EventKind.STEP, "a", at=at)
    assert job.deadline_at is None  # nothing learnt until the timings are refreshed

    assert deadlines.refresh_step_timings(db, now=at, policy=POLICY) == 3
    report(db, job, EventKind.INFO, None, at=at)
    assert job.deadline_at == at + timedelta(seconds=992)

    # Step c took 5 s every time: the floor (60 s) applies.
    report(db, job, EventKind.STEP, "b", at=at)
    assert job.deadline_at == at + timedelta(seconds=60)


def test_a_step_with_too_few_samples_learns_nothing(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS)
    seed_history(db, configuration, {"a": [10, 10], "b": [100, 200], "c": [5, 5]})
    deadlines.refresh_step_timings(db, now=datetime.now(UTC), policy=POLICY)
    job = new_job(db, configuration, create_customer(db))
    report(db, job, EventKind.STEP, "a", at=job.created_at)
    assert job.deadline_at is None


def test_the_sweep_stalls_overdue_jobs_and_a_later_event_moves_them_on(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, step_timeout=300)
    customer = create_customer(db)
    overdue, on_time = new_job(db, configuration, customer), new_job(db, configuration, customer)
    start = overdue.created_at
    report(db, overdue, EventKind.STEP, "a", at=start)
    report(db, on_time, EventKind.STEP, "a", at=start + timedelta(seconds=200))
    cost_before = overdue.cost

    now = start + timedelta(seconds=301)
    assert deadlines.sweep_deadlines(db, now=now, limit=100) == 1
    assert deadlines.sweep_deadlines(db, now=now, limit=100) == 0  # idempotent
    db.refresh(overdue)
    db.refresh(on_time)
    assert (overdue.status, on_time.status) == (JobStatus.STALLED, JobStatus.RUNNING)
    assert overdue.cost == cost_before

    # Its next event counts as it would have, had the job never stalled.
    report(db, overdue, EventKind.STEP, "b", at=now)
    assert overdue.status == JobStatus.RUNNING
    assert overdue.deadline_at == now + timedelta(seconds=300)
    assert overdue.cost == Decimal("3")
    assert overdue.steps_completed == 2


def test_a_stalled_job_can_complete_fail_or_be_cancelled(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, start_timeout=10)
    customer = create_customer(db)
    jobs = [new_job(db, configuration, customer) for _ in range(3)]
    later = jobs[0].created_at + timedelta(minutes=1)
    assert deadlines.sweep_deadlines(db, now=later, limit=100) == 3
    finishing, failing, cancelled = jobs
    for tag in ("a", "b", "c"):
        report(db, finishing, EventKind.STEP, tag, at=later)
    report(db, failing, EventKind.ERROR, None, at=later)
    cancel_job(db, caller=Caller(user=create_admin(db)), job_id=cancelled.id)
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ]
    assert finishing.cost == Decimal("6")


def test_the_sweep_works_in_bounded_batches_oldest_deadline_first(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS, start_timeout=10)
    customer = create_customer(db)
    jobs = [new_job(db, configuration, customer) for _ in range(5)]
    now = jobs[0].created_at + timedelta(minutes=1)
    assert deadlines.sweep_deadlines(db, now=now, limit=2) == 2
    assert deadlines.sweep_deadlines(db, now=now, limit=2) == 2
    assert deadlines.sweep_deadlines(db, now=now, limit=2) == 1
    assert deadlines.sweep_deadlines(db, now=now, limit=2) == 0


def test_eta_is_now_plus_the_median_durations_of_the_remaining_steps(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "deadline_min_samples", 3)
    configuration = create_configuration(db, steps=STEPS)
    # Remaining steps b and c. Medians: 200 and 20 s; p90s (rank 0.9 * 2 = 1.8): 200 + 0.8 * 100
    # = 280 and 20 + 0.8 * 10 = 28 s. So eta = now + 220 s, eta_p90 = now + 308 s.
    seed_history(db, configuration, {"a": [1, 2, 3], "b": [100, 300, 200], "c": [30, 10, 20]})
    deadlines.refresh_step_timings(db, now=datetime.now(UTC), policy=LearntWait.from_settings())
    job = new_job(db, configuration, create_customer(db))
    report(db, job, EventKind.STEP, "a", at=job.created_at)

    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    detail = job_detail(db, job=job, now=now)
    assert detail.eta == now + timedelta(seconds=220)
    assert detail.eta_p90 == now + timedelta(seconds=308)

    report(db, job, EventKind.STEP, "c", at=job.created_at)
    assert job_detail(db, job=job, now=now).eta == now + timedelta(seconds=200)
    report(db, job, EventKind.STEP, "b", at=job.created_at)
    finished = job_detail(db, job=job, now=now)
    assert (finished.status, finished.eta, finished.eta_p90) == (JobStatus.COMPLETED, None, None)


def test_eta_is_unknown_without_enough_history(db: Session) -> None:
    configuration = create_configuration(db, steps=STEPS)
    seed_history(db, configuration, {"a": [1], "b": [100], "c": [30]})
    deadlines.refresh_step_timings(db, now=datetime.now(UTC), policy=LearntWait.from_settings())
    job = new_job(db, configuration, create_customer(db))
    detail = job_detail(db, job=job, now=datetime.now(UTC))
    assert (detail.eta, detail.eta_p90) == (None, None)


@pytest.mark.usefixtures("committed")
def test_two_sweeps_at_once_mark_each_job_once_and_queue_one_notification_each() -> None:
    jobs = 40
    with config.database.SessionLocal() as session:
        configuration = create_configuration(session, steps=STEPS, start_timeout=1)
        customer = create_customer(session)
        session.add(
            WebhookEndpoint(
                customer_id=None,
                url="https://hooks.example/all",
                event_types=["job.stalled"],
                secret_encrypted=webhooks.configured_secret_box().encrypt("whsec_c2VjcmV0"),
            )
        )
        created = [new_job(session, configuration, customer) for _ in range(jobs)]
        later = created[0].created_at + timedelta(minutes=5)
        session.commit()

    barrier = threading.Barrier(2)
    counts: list[int] = []

    def sweep() -> None:
        run = TaskRun(
            now=later,
            batch_size=3,
            max_batches=100,
            session_factory=config.database.SessionLocal,
        )
        barrier.wait()
        counts.append(sweep_task(run)["jobs_stalled"])

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == jobs
    with config.database.SessionLocal() as session:
        statuses = session.scalars(select(Job.status).where(Job.customer_id == customer.id)).all()
        assert set(statuses) == {JobStatus.STALLED}
        per_job = session.execute(
            select(WebhookDelivery.job_id, func.count()).group_by(WebhookDelivery.job_id)
        ).all()
    assert len(per_job) == jobs
    assert {count for _, count in per_job} == {1}


def test_timings_are_refreshed_at_most_every_interval_for_the_versions_that_changed(
    db: Session,
) -> None:
    changing, quiet = (create_configuration(db, steps=STEPS) for _ in range(2))
    for configuration in (changing, quiet):
        seed_history(db, configuration, {"a": [1] * 5, "b": [2] * 5, "c": [3] * 5})
    first = datetime.now(UTC) + timedelta(hours=3)
    assert deadlines.refresh_step_timings(db, now=first, policy=POLICY) == 6

    job = new_job(db, changing, create_customer(db))
    later = first + timedelta(minutes=1)
    for tag in ("a", "b", "c"):
        report(db, job, EventKind.STEP, tag, at=later)
    assert deadlines.refresh_step_timings(db, now=later, policy=POLICY) == 0
    again = first + deadlines.REFRESH_INTERVAL
    assert deadlines.refresh_step_timings(db, now=again, policy=POLICY) == 3
    samples = dict(
        db.execute(
            select(JobStepTiming.configuration_id, func.min(JobStepTiming.sample_count)).group_by(
                JobStepTiming.configuration_id
            )
        ).all()
    )
    assert samples == {changing.id: 6, quiet.id: 5}
