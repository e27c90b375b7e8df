"""The seeds: demo data through the services, and bulk data that obeys the same rules."""

from collections import defaultdict

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import seed
from app.models import (
    ApiKey,
    Event,
    EventKind,
    Job,
    JobConfiguration,
    JobStatus,
    JobStepCompletion,
    JobStepError,
    Scope,
)
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import events as event_service
from app.services import jobs as job_service
from app.services.access import Caller
from tests.helpers.factories import create_admin, create_user

COMPARED = [
    "status",
    "steps_completed",
    "completed_points",
    "cost",
    "event_count",
    "error_count",
    "unresolved_error_count",
    "completed_at",
    "last_step_completed_at",
]


def completion_facts(row: JobStepCompletion) -> tuple[object, ...]:
    return (row.completed_at, row.job_created_at, round(row.seconds_since_previous, 6))


def error_facts(row: JobStepError) -> tuple[object, ...]:
    return (
        row.error_count,
        row.first_error_at,
        row.last_error_at,
        row.job_created_at,
        row.step_completed,
    )


@pytest.mark.usefixtures("committed")
def test_bulk_jobs_match_what_the_services_make_of_the_same_events(db: Session) -> None:
    totals = seed.seed_bulk(jobs=40, events_per_job=22, customer_count=3, months=2, seed=7)
    assert totals["jobs"] == 40

    bulk_jobs = db.scalars(select(Job).where(Job.provider_job_id.startswith("bulk-"))).all()
    assert {job.status for job in bulk_jobs} >= {
        JobStatus.COMPLETED,
        JobStatus.RUNNING,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
    events_by_job: dict[int, list[Event]] = defaultdict(list)
    for event in db.scalars(select(Event).order_by(Event.id)):
        events_by_job[event.job_id].append(event)
    completions = {
        (row.job_id, row.step_id): completion_facts(row)
        for row in db.scalars(select(JobStepCompletion))
    }
    step_errors = {
        (row.job_id, row.step_id): error_facts(row) for row in db.scalars(select(JobStepError))
    }
    assert step_errors  # the seed's jobs do fail and retry

    admin = Caller(user=create_admin(db))
    for bulk in bulk_jobs:
        configuration = db.get_one(JobConfiguration, bulk.configuration_id)
        replay, _ = job_service.create_job(
            db,
            caller=admin,
            job_in=JobCreate(
                provider_job_id=f"replay-{bulk.id}",
                tag=configuration.tag,
                version=configuration.version,
                customer_id=bulk.customer_id,
            ),
        )
        replay.created_at = bulk.created_at  # so that the steps are timed from the same start
        replay = job_service.lock_job(db, caller=admin, job_id=replay.id)
        # One event per request, as scripts send them, so the rules apply event by event.
        for event in events_by_job[bulk.id]:
            event_in = EventCreate(
                kind=EventKind(event.kind), name=event.step_tag, occurred_at=event.occurred_at
            )
            [outcome] = event_service.apply_to_jobs(db, [(replay, event_in)])
            assert outcome.result == "created"
        if bulk.status == JobStatus.CANCELLED:
            replay = job_service.cancel_job(db, caller=admin, job_id=replay.id)
        for name in COMPARED:
            assert getattr(replay, name) == getattr(bulk, name), (bulk.id, name)
        replayed = {
            row.step_id: completion_facts(row)
            for row in db.scalars(
                select(JobStepCompletion).where(JobStepCompletion.job_id == replay.id)
            )
        }
        assert replayed == {
            step_id: at for (job_id, step_id), at in completions.items() if job_id == bulk.id
        }
        replayed_errors = {
            row.step_id: error_facts(row)
            for row in db.scalars(select(JobStepError).where(JobStepError.job_id == replay.id))
        }
        assert replayed_errors == {
            step_id: counted
            for (job_id, step_id), counted in step_errors.items()
            if job_id == bulk.id
        }


def test_the_seeded_admins_key_may_push_configurations_and_a_clients_may_not(
    db: Session,
) -> None:
    admin, client = create_admin(db), create_user(db)
    seed.seed_api_keys(db, {admin.email: admin, client.email: client})
    scopes = {
        key.user_id: key.scopes
        for key in db.scalars(select(ApiKey).where(ApiKey.user_id.in_([admin.id, client.id])))
    }
    assert scopes == {
        admin.id: [Scope.INGEST, Scope.READ, Scope.CONFIGURE],
        client.id: [Scope.INGEST, Scope.READ],
    }
