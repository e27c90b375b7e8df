"""The jobs service: creation once per provider_job_id (the same request answers the same job,
another customer's or configuration's use of the id is a conflict), which version a job pins,
who may create and see jobs, and cancellation."""

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, InvalidInput, NotFound
from app.models import EventKind, Job, JobStatus
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import events, jobs
from app.services.access import Caller
from tests.helpers.factories import (
    DEFAULT_STEPS,
    create_admin,
    create_configuration,
    create_customer,
    create_user,
    unique,
)


def test_the_same_create_answers_the_same_job_and_another_owner_is_a_conflict(
    db: Session,
) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    admin = Caller(create_admin(db))
    job_in = JobCreate(
        provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
    )
    job, created = jobs.create_job(db, caller=admin, job_in=job_in)
    again, created_again = jobs.create_job(db, caller=admin, job_in=job_in)
    assert (created, created_again, again.id) == (True, False, job.id)
    assert (job.status, job.step_count, job.total_points) == (JobStatus.PENDING, 2, 4)

    elsewhere = job_in.model_copy(update={"customer_id": create_customer(db).id})
    with pytest.raises(Conflict, match="already used by a job of another customer"):
        jobs.create_job(db, caller=admin, job_in=elsewhere)
    other_configuration = create_configuration(db)
    with pytest.raises(Conflict):
        jobs.create_job(
            db, caller=admin, job_in=job_in.model_copy(update={"tag": other_configuration.tag})
        )


def test_a_job_pins_the_version_asked_for_or_the_latest(db: Session) -> None:
    first = create_configuration(db)
    latest = create_configuration(db, tag=first.tag, steps=[("only", 1, Decimal(1))])
    admin, customer = Caller(create_admin(db)), create_customer(db)

    def create(version: int | None) -> int:
        job_in = JobCreate(
            provider_job_id=unique("job"), tag=first.tag, version=version, customer_id=customer.id
        )
        return jobs.create_job(db, caller=admin, job_in=job_in)[0].configuration_id

    assert (create(None), create(1)) == (latest.id, first.id)
    with pytest.raises(InvalidInput, match=f"has no version 3 \\(latest: {latest.version}\\)"):
        create(3)
    with pytest.raises(InvalidInput, match="Unknown job configuration tag"):
        jobs.create_job(
            db,
            caller=admin,
            job_in=JobCreate(provider_job_id=unique("job"), tag="nope", customer_id=customer.id),
        )


def test_a_client_creates_and_sees_jobs_of_its_own_customer_only(db: Session) -> None:
    configuration, own, other = create_configuration(db), create_customer(db), create_customer(db)
    client = Caller(create_user(db, customer=own))
    job, _ = jobs.create_job(
        db, caller=client, job_in=JobCreate(provider_job_id=unique("job"), tag=configuration.tag)
    )
    assert job.customer_id == own.id
    with pytest.raises(NotFound, match=f"Customer {other.id} not found"):
        jobs.create_job(
            db,
            caller=client,
            job_in=JobCreate(
                provider_job_id=unique("job"), tag=configuration.tag, customer_id=other.id
            ),
        )
    admin = Caller(create_admin(db))
    with pytest.raises(InvalidInput, match="customer_id is required"):
        jobs.create_job(db, caller=admin, job_in=JobCreate(provider_job_id=unique("job"), tag="x"))
    theirs, _ = jobs.create_job(
        db,
        caller=admin,
        job_in=JobCreate(
            provider_job_id=unique("job"), tag=configuration.tag, customer_id=other.id
        ),
    )
    assert jobs.get_job(db, caller=client, job_id=job.id).id == job.id
    with pytest.raises(NotFound):
        jobs.get_job(db, caller=client, job_id=theirs.id)
    with pytest.raises(NotFound):
        jobs.get_job_by_provider_id(db, caller=client, provider_job_id=theirs.provider_job_id)
    with pytest.raises(NotFound):
        jobs.cancel_job(db, caller=client, job_id=theirs.id)


def test_cancelling_refuses_later_events_and_a_completed_job_cannot_be_cancelled(
    db: Session,
) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    admin = Caller(create_admin(db))

    def new_job() -> Job:
        job_in = JobCreate(
            provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
        )
        return jobs.create_job(db, caller=admin, job_in=job_in)[0]

    job = new_job()
    cancelled = jobs.cancel_job(db, caller=admin, job_id=job.id)
    assert (cancelled.status, cancelled.deadline_at) == (JobStatus.CANCELLED, None)
    assert jobs.cancel_job(db, caller=admin, job_id=job.id).cancelled_at == cancelled.cancelled_at
    [outcome] = events.apply_to_jobs(db, [(job, EventCreate(kind=EventKind.INFO))])
    assert outcome.result == "rejected"
    assert isinstance(outcome.error, Conflict)

    done = new_job()
    steps = [EventCreate(kind=EventKind.STEP, name=tag) for tag, _, _ in DEFAULT_STEPS]
    events.apply_to_jobs(db, [(done, step) for step in steps])
    with pytest.raises(Conflict, match="is completed and cannot be cancelled"):
        jobs.cancel_job(db, caller=admin, job_id=done.id)
