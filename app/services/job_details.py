"""One job as `GET /jobs/{id}` shows it: its row, the state of every step, and its ETA. Webhook
notifications carry the same."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from app.models import Event, Job
from app.schemas.event import EventPublic
from app.schemas.job import JobDetail, JobPublic, JobStepState
from app.services import deadlines
from app.services.jobs import get_job_state
from config import config


def _event(event: Event | None) -> EventPublic | None:
    return EventPublic.model_validate(event) if event is not None else None


def job_detail(session: Session, *, job: Job, now: datetime) -> JobDetail:
    state = get_job_state(session, job=job)
    estimate = deadlines.estimate(state, now=now, min_samples=config.settings.deadline_min_samples)
    return JobDetail(
        **JobPublic.model_validate(job).model_dump(),
        steps=[
            JobStepState(
                position=item.step.position,
                tag=item.step.tag,
                name=item.step.name,
                points=item.step.points,
                cost=item.step.cost,
                completed_at=item.completion.completed_at if item.completion else None,
                latest_unresolved_error=_event(item.latest_unresolved_error),
            )
            for item in state.steps
        ],
        latest_unresolved_job_error=_event(state.latest_unresolved_job_error),
        eta=estimate.eta,
        eta_p90=estimate.eta_p90,
    )


def job_detail_by_id(session: Session, *, job_id: int, now: datetime) -> JobDetail | None:
    """The job's detail, whoever may see it (the webhook worker), or None if it is gone."""
    job = session.scalar(select(Job).options(joinedload(Job.configuration)).where(Job.id == job_id))
    return job_detail(session, job=job, now=now) if job is not None else None
