"""A job's detail (GET /jobs/{id} and the webhooks' payloads): every step of its version in
order with its completion and latest open error, the latest open error that names no step, and
no ETA without history."""

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.models import EventKind, JobStatus
from app.schemas.event import EventCreate
from app.services import events, job_details
from tests.helpers.factories import create_configuration, create_customer, create_job

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_the_detail_shows_each_step_its_completion_and_its_open_errors(db: Session) -> None:
    configuration = create_configuration(db)
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    reported = [
        EventCreate(kind=EventKind.STEP, name="fetch", occurred_at=T0),
        EventCreate(kind=EventKind.ERROR, name="analyse", message="first", occurred_at=T0),
        EventCreate(kind=EventKind.ERROR, name="analyse", message="second", occurred_at=T0),
        EventCreate(kind=EventKind.ERROR, message="no step"),
    ]
    events.apply_to_jobs(db, [(job, event) for event in reported])
    db.refresh(job)

    detail = job_details.job_detail(db, job=job, now=T0 + timedelta(minutes=1))
    assert (detail.id, detail.status, detail.steps_completed) == (job.id, JobStatus.FAILED, 1)
    assert [(step.position, step.tag, step.completed_at) for step in detail.steps] == [
        (0, "fetch", T0),
        (1, "analyse", None),
    ]
    assert detail.steps[0].latest_unresolved_error is None
    latest = detail.steps[1].latest_unresolved_error
    assert latest is not None
    assert latest.message == "second"
    assert detail.latest_unresolved_job_error is not None
    assert detail.latest_unresolved_job_error.message == "no step"
    assert (detail.eta, detail.eta_p90) == (None, None)  # no recorded durations yet


def test_a_missing_job_has_no_detail(db: Session) -> None:
    assert job_details.job_detail_by_id(db, job_id=-1, now=T0) is None
