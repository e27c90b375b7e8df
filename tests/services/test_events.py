"""The events service called directly (as the seed and tasks would): record_event, record_batch
and list_events, with the refusals they raise and the rows they leave."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, InvalidInput, NotFound
from app.models import Event, EventKind, Job, JobConfiguration, JobStatus
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import events, jobs
from app.services.access import Caller
from config import config
from tests.helpers.factories import (
    create_admin,
    create_configuration,
    create_customer,
    create_user,
    unique,
)

STEPS = (("fetch", 1, Decimal("0.5000")), ("analyse", 3, Decimal("2.0125")))


@pytest.fixture
def admin(db: Session) -> Caller:
    return Caller(user=create_admin(db))


@pytest.fixture
def configuration(db: Session) -> JobConfiguration:
    return create_configuration(db, steps=STEPS)


def new_job(db: Session, caller: Caller, configuration: JobConfiguration, customer_id: int) -> Job:
    job_in = JobCreate(
        provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer_id
    )
    job, _ = jobs.create_job(db, caller=caller, job_in=job_in)
    return job


@pytest.fixture
def job(db: Session, admin: Caller, configuration: JobConfiguration) -> Job:
    return new_job(db, admin, configuration, create_customer(db).id)


def step(name: str, **fields: object) -> EventCreate:
    return EventCreate.model_validate({"kind": "step", "name": name, **fields})


def stored_events(db: Session, job_id: int) -> int:
    return db.scalar(select(func.count()).where(Event.job_id == job_id)) or 0


# record_event


def test_an_event_answers_itself_and_the_job_as_it_now_is(
    db: Session, admin: Caller, job: Job
) -> None:
    occurred_at = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event, job_now, created = events.record_event(
        db,
        caller=admin,
        job_id=job.id,
        event_in=step("analyse", event_id="e-1", occurred_at=occurred_at, metadata={"n": 1}),
    )
    assert created
    assert (event.job_id, event.kind, event.name, event.event_id) == (
        job.id,
        EventKind.STEP,
        "analyse",
        "e-1",
    )
    assert event.metadata == {"n": 1}
    assert event.occurred_at == occurred_at
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.received_at.utcoffset() == timedelta(0)
    assert (job_now.status, job_now.steps_completed, job_now.completed_points) == (
        JobStatus.RUNNING,
        1,
        3,
    )
    assert job_now.progress == 0.75
    assert job_now.cost == Decimal("2.0125")
    assert isinstance(job_now.cost, Decimal)
    assert job_now.last_event_at == event.received_at
    db.refresh(job)
    assert (job.event_count, job.cost, job.status) == (1, Decimal("2.0125"), JobStatus.RUNNING)


def test_a_replayed_event_id_answers_the_stored_event_and_changes_nothing(
    db: Session, admin: Caller, job: Job
) -> None:
    first, _, _ = events.record_event(
        db, caller=admin, job_id=job.id, event_in=step("fetch", event_id="once")
    )
    # The same key with other content is still the stored event: a retry, not a new report.
    again, job_now, created = events.record_event(
        db, caller=admin, job_id=job.id, event_in=step("analyse", event_id="once")
    )
    assert not created
    assert again == first
    assert (job_now.event_count, job_now.steps_completed, job_now.cost) == (1, 1, Decimal("0.5"))
    assert stored_events(db, job.id) == 1


def test_an_unknown_step_is_refused_listing_the_valid_tags_and_stores_nothing(
    db: Session, admin: Caller, job: Job
) -> None:
    with pytest.raises(InvalidInput) as refused:
        events.record_event(db, caller=admin, job_id=job.id, event_in=step("deploy"))
    assert refused.value.detail == (
        "Unknown step 'deploy' for this job; valid steps: fetch, analyse"
    )
    db.refresh(job)
    assert (job.event_count, job.status, stored_events(db, job.id)) == (0, JobStatus.PENDING, 0)


def test_a_cancelled_job_refuses_events_with_a_conflict(
    db: Session, admin: Caller, job: Job
) -> None:
    jobs.cancel_job(db, caller=admin, job_id=job.id)
    with pytest.raises(Conflict, match="is cancelled"):
        events.record_event(db, caller=admin, job_id=job.id, event_in=step("fetch"))
    assert stored_events(db, job.id) == 0


def test_another_customers_job_is_not_found_like_a_missing_one(db: Session, job: Job) -> None:
    stranger = Caller(user=create_user(db))
    with pytest.raises(NotFound) as hidden:
        events.record_event(db, caller=stranger, job_id=job.id, event_in=step("fetch"))
    with pytest.raises(NotFound) as missing:
        events.record_event(db, caller=stranger, job_id=job.id + 10_000, event_in=step("fetch"))
    assert hidden.value.detail == f"Job {job.id} not found"
    assert missing.value.detail == f"Job {job.id + 10_000} not found"
    assert stored_events(db, job.id) == 0


def test_a_client_records_events_for_its_own_customers_jobs(
    db: Session, admin: Caller, configuration: JobConfiguration
) -> None:
    customer = create_customer(db)
    own = new_job(db, admin, configuration, customer.id)
    caller = Caller(user=create_user(db, customer=customer))
    _, job_now, created = events.record_event(
        db, caller=caller, job_id=own.id, event_in=step("fetch")
    )
    assert created
    assert job_now.customer_id == customer.id


# record_batch


def test_a_batch_answers_each_item_in_order_and_a_refused_one_stops_nothing(
    db: Session, admin: Caller, job: Job, configuration: JobConfiguration
) -> None:
    other = new_job(db, admin, configuration, create_customer(db).id)
    items = [
        {"job_id": job.id, "kind": "step", "name": "fetch", "event_id": "k"},
        {"provider_job_id": other.provider_job_id, "kind": "error", "name": "analyse"},
        {"job_id": job.id, "kind": "step"},  # no name
        {"job_id": job.id, "kind": "step", "name": "deploy"},
        {"job_id": job.id + 10_000, "kind": "info"},
        {"job_id": job.id, "kind": "step", "name": "fetch", "event_id": "k"},  # a repeat
        {"provider_job_id": other.provider_job_id, "kind": "step", "name": "analyse"},
    ]
    outcomes = events.record_batch(db, caller=admin, items=items)
    assert [(each.index, each.result) for each in outcomes] == [
        (0, "created"),
        (1, "created"),
        (2, "rejected"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "duplicate"),
        (6, "created"),
    ]
    assert (
        outcomes[2].reason
        == "Value error, name is required for step events: the tag of the step completed"
    )
    assert outcomes[3].reason == "Unknown step 'deploy' for this job; valid steps: fetch, analyse"
    assert outcomes[4].reason == f"Job {job.id + 10_000} not found"
    assert outcomes[5].event_id == outcomes[0].event_id
    assert [outcomes[1].job_id, outcomes[6].job_id] == [other.id, other.id]
    db.refresh(job)
    db.refresh(other)
    assert (job.event_count, job.steps_completed) == (1, 1)
    # The error was resolved by the later step event for its step, in the same batch.
    assert (other.status, other.unresolved_error_count, other.error_count) == (
        JobStatus.RUNNING,
        0,
        1,
    )


def test_a_clients_batch_cannot_reach_another_customers_jobs(db: Session, job: Job) -> None:
    stranger = Caller(user=create_user(db))
    items = [
        {"job_id": job.id, "kind": "info"},
        {"provider_job_id": job.provider_job_id, "kind": "info"},
    ]
    outcomes = events.record_batch(db, caller=stranger, items=items)
    assert [each.result for each in outcomes] == ["rejected"] * 2
    assert [each.reason for each in outcomes] == [
        f"Job {job.id} not found",
        f"Job {job.provider_job_id!r} not found",
    ]
    assert stored_events(db, job.id) == 0


def test_a_batch_with_no_valid_item_changes_nothing(db: Session, admin: Caller, job: Job) -> None:
    outcomes = events.record_batch(db, caller=admin, items=[{"kind": "info"}, "not an object"])
    assert [each.result for each in outcomes] == ["rejected"] * 2
    assert stored_events(db, job.id) == 0


# list_events


def test_events_are_listed_in_arrival_order_page_by_page(
    db: Session, admin: Caller, job: Job
) -> None:
    for name in ("analyse", "fetch", "analyse"):
        events.record_event(db, caller=admin, job_id=job.id, event_in=step(name))
    first = events.list_events(db, caller=admin, job_id=job.id, limit=2, cursor=None)
    rest = events.list_events(db, caller=admin, job_id=job.id, limit=2, cursor=first.next_cursor)
    listed = first.events + rest.events
    assert [event.step_tag for event in listed] == ["analyse", "fetch", "analyse"]
    assert first.next_cursor is not None
    assert rest.next_cursor is None
    assert first.job.id == job.id
    ids = [event.id for event in listed]
    assert ids == sorted(ids)


def test_another_customers_events_are_not_found(db: Session, job: Job) -> None:
    with pytest.raises(NotFound):
        events.list_events(
            db, caller=Caller(user=create_user(db)), job_id=job.id, limit=10, cursor=None
        )


# Concurrency (real commits, several connections)


@pytest.mark.usefixtures("committed")
def test_batches_touching_the_same_jobs_in_opposite_orders_never_deadlock() -> None:
    """Each call locks its jobs in id order, whatever the order of its events."""
    with config.database.SessionLocal() as session:
        admin = Caller(user=create_admin(session))
        configuration = create_configuration(session, steps=STEPS)
        customer_id = create_customer(session).id
        job_ids = [new_job(session, admin, configuration, customer_id).id for _ in range(4)]
        session.commit()
    rounds, threads = 15, 4
    barrier = threading.Barrier(threads)

    def send(thread: int) -> list[str]:
        order = job_ids if thread % 2 == 0 else job_ids[::-1]
        results: list[str] = []
        barrier.wait()
        for number in range(rounds):
            with config.database.SessionLocal() as session:
                caller = Caller(user=session.merge(admin.user, load=False))
                items = [
                    {"job_id": job_id, "kind": "info", "event_id": f"{thread}-{number}"}
                    for job_id in order
                ]
                outcomes = events.record_batch(session, caller=caller, items=items)
                session.commit()
            results += [each.result for each in outcomes]
        return results

    with ThreadPoolExecutor(threads) as pool:
        results = [result for each in pool.map(send, range(threads)) for result in each]
    assert results == ["created"] * (threads * rounds * len(job_ids))
    with config.database.SessionLocal() as session:
        counts = session.scalars(select(Job.event_count).where(Job.id.in_(job_ids))).all()
    assert counts == [threads * rounds] * len(job_ids)


def test_a_job_id_beyond_any_databases_ids_is_not_found(db: Session, admin: Caller) -> None:
    huge = 2**96
    with pytest.raises(NotFound) as missing:
        events.record_event(db, caller=admin, job_id=huge, event_in=step("fetch"))
    assert missing.value.detail == f"Job {huge} not found"
    [outcome] = events.record_batch(db, caller=admin, items=[{"job_id": -huge, "kind": "info"}])
    assert (outcome.result, outcome.reason) == ("rejected", f"Job {-huge} not found")


def test_a_batch_applies_its_events_as_if_sent_one_by_one(
    db: Session, admin: Caller, configuration: JobConfiguration
) -> None:
    """A key first used by a refused event is still free: a refused event stores nothing."""
    customer_id = create_customer(db).id
    items = [
        {"kind": "step", "name": "deploy", "event_id": "k"},
        {"kind": "step", "name": "fetch", "event_id": "k"},
        {"kind": "step", "name": "deploy", "event_id": "k"},
        {"kind": "step", "name": "analyse", "event_id": "k"},
    ]
    batched = new_job(db, admin, configuration, customer_id)
    outcomes = events.record_batch(
        db, caller=admin, items=[{"job_id": batched.id, **item} for item in items]
    )
    one_by_one = new_job(db, admin, configuration, customer_id)
    singles = []
    for item in items:
        try:
            _, _, created = events.record_event(
                db, caller=admin, job_id=one_by_one.id, event_in=EventCreate.model_validate(item)
            )
        except InvalidInput:
            singles.append("rejected")
        else:
            singles.append("created" if created else "duplicate")
    assert [each.result for each in outcomes] == singles
    assert singles == ["rejected", "created", "duplicate", "duplicate"]
    assert outcomes[2].event_id == outcomes[3].event_id == outcomes[1].event_id
    assert outcomes[2].reason is None
    db.refresh(batched)
    db.refresh(one_by_one)
    assert (batched.event_count, batched.steps_completed) == (1, 1)
    assert (one_by_one.event_count, one_by_one.steps_completed) == (1, 1)
