"""Jobs: creation (idempotent per provider_job_id), reads, lists and cancellation."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, func, literal_column, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, joinedload

from app.internal.errors import Conflict, InvalidInput, NotFound
from app.internal.pagination import keyset_page
from app.models import (
    Customer,
    Event,
    EventKind,
    Job,
    JobConfiguration,
    JobConfigurationStep,
    JobStatus,
    JobStepCompletion,
    JobStepTiming,
    WebhookEventType,
)
from app.schemas.job import JobCreate, JobSort
from app.services import webhooks
from app.services.access import Caller


def resolve_configuration(session: Session, *, tag: str, version: int | None) -> JobConfiguration:
    """The version a new job pins: `version`, or the latest. Unknown ones are invalid input."""
    statement = select(JobConfiguration).where(JobConfiguration.tag == tag)
    if version is not None:
        statement = statement.where(JobConfiguration.version == version)
    configuration = session.scalar(statement.order_by(JobConfiguration.version.desc()).limit(1))
    if configuration is not None:
        return configuration
    latest = session.scalar(
        select(func.max(JobConfiguration.version)).where(JobConfiguration.tag == tag)
    )
    if latest is None:
        raise InvalidInput(f"Unknown job configuration tag {tag!r}")
    raise InvalidInput(f"Job configuration {tag!r} has no version {version} (latest: {latest})")


def _customer_for_new_job(session: Session, caller: Caller, customer_id: int | None) -> int:
    if not caller.is_admin:
        own = caller.user.customer_id
        assert own is not None  # a client always has a customer
        if customer_id is not None and customer_id != own:
            raise NotFound(f"Customer {customer_id} not found")
        return own
    if customer_id is None:
        raise InvalidInput("customer_id is required when an admin creates a job")
    if session.get(Customer, customer_id) is None:
        raise NotFound(f"Customer {customer_id} not found")
    return customer_id


def _deadline_at_creation(configuration_id: int) -> ColumnElement[datetime]:
    """A new job's deadline, by the rule events apply too (the database's `job_deadline`)."""
    return func.job_deadline(
        null(), configuration_id, literal_column("'pending'"), func.now(), null()
    )


def create_job(session: Session, *, caller: Caller, job_in: JobCreate) -> tuple[Job, bool]:
    """Create the job, or answer the existing one for a repeated request (created=False)."""
    customer_id = _customer_for_new_job(session, caller, job_in.customer_id)
    configuration = resolve_configuration(session, tag=job_in.tag, version=job_in.version)
    # ON CONFLICT DO NOTHING: two identical creates at the same moment make one job.
    job_id = session.scalar(
        insert(Job)
        .values(
            provider_job_id=job_in.provider_job_id,
            customer_id=customer_id,
            configuration_id=configuration.id,
            created_by_id=caller.user.id,
            metadata_=job_in.metadata,
            step_count=configuration.step_count,
            total_points=configuration.total_points,
            deadline_at=_deadline_at_creation(configuration.id),
        )
        .on_conflict_do_nothing(index_elements=[Job.provider_job_id])
        .returning(Job.id)
    )
    if job_id is not None:
        return get_job(session, caller=caller, job_id=job_id), True

    existing = session.scalar(
        select(Job)
        .options(joinedload(Job.configuration))
        .where(Job.provider_job_id == job_in.provider_job_id)
    )
    assert existing is not None
    same_configuration = existing.configuration.tag == job_in.tag and (
        job_in.version is None or existing.configuration.version == job_in.version
    )
    if existing.customer_id != customer_id or not same_configuration:
        raise Conflict(
            f"provider_job_id {job_in.provider_job_id!r} is already used by a job of another "
            "customer or configuration"
        )
    return existing, False


def _visible_jobs(caller: Caller) -> Select[Job]:
    return (
        select(Job)
        .options(joinedload(Job.configuration))
        .where(caller.customer_filter(Job.customer_id))
    )


def get_job(session: Session, *, caller: Caller, job_id: int) -> Job:
    job = session.scalar(_visible_jobs(caller).where(Job.id == job_id))
    if job is None:
        raise NotFound(f"Job {job_id} not found")
    return job


def get_job_by_provider_id(session: Session, *, caller: Caller, provider_job_id: str) -> Job:
    job = session.scalar(_visible_jobs(caller).where(Job.provider_job_id == provider_job_id))
    if job is None:
        raise NotFound(f"Job with provider_job_id {provider_job_id!r} not found")
    return job


def locked_jobs(
    session: Session, *, caller: Caller, ids: Iterable[int] = (), provider_ids: Iterable[str] = ()
) -> list[Job]:
    """The caller's jobs among those named, locked until the transaction ends (their events are
    applied one request at a time), read afresh after the lock. Locks are taken in id order, so
    two requests touching the same jobs cannot deadlock."""
    ids, provider_ids = set(ids), set(provider_ids)
    if not ids and not provider_ids:
        return []
    return list(
        session.scalars(
            select(Job)
            .options(joinedload(Job.configuration))
            .where(
                or_(Job.id.in_(ids), Job.provider_job_id.in_(provider_ids)),
                caller.customer_filter(Job.customer_id),
            )
            .order_by(Job.id)
            .with_for_update(of=Job)
            .execution_options(populate_existing=True)
        )
    )


def lock_job(session: Session, *, caller: Caller, job_id: int) -> Job:
    jobs = locked_jobs(session, caller=caller, ids=[job_id])
    if not jobs:
        raise NotFound(f"Job {job_id} not found")
    return jobs[0]


@dataclass(frozen=True)
class JobFilters:
    statuses: Sequence[JobStatus] = ()
    customer_id: int | None = None
    tag: str | None = None
    q: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    has_errors: bool | None = None


def list_jobs(
    session: Session,
    *,
    caller: Caller,
    filters: JobFilters,
    sort: JobSort,
    descending: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    statement = _visible_jobs(caller)
    if filters.statuses:
        statement = statement.where(Job.status.in_(filters.statuses))
    if filters.customer_id is not None:
        statement = statement.where(Job.customer_id == filters.customer_id)
    if filters.tag is not None:
        statement = statement.where(
            Job.configuration_id.in_(
                select(JobConfiguration.id).where(JobConfiguration.tag == filters.tag)
            )
        )
    if filters.q:
        statement = statement.where(Job.provider_job_id.startswith(filters.q, autoescape=True))
    if filters.created_after is not None:
        statement = statement.where(Job.created_at >= filters.created_after)
    if filters.created_before is not None:
        statement = statement.where(Job.created_at < filters.created_before)
    if filters.has_errors is True:
        statement = statement.where(Job.error_count > 0)
    elif filters.has_errors is False:
        statement = statement.where(Job.error_count == 0)
    sort_column = {
        JobSort.CREATED_AT: Job.created_at,
        JobSort.UPDATED_AT: Job.updated_at,
        JobSort.PROGRESS: Job.progress,
    }[sort]
    return keyset_page(
        session,
        statement,
        order_by=[sort_column, Job.id],
        descending=descending,
        limit=limit,
        cursor=cursor,
    )


def cancel_job(session: Session, *, caller: Caller, job_id: int) -> Job:
    job = lock_job(session, caller=caller, job_id=job_id)
    if job.status == JobStatus.COMPLETED:
        raise Conflict(f"Job {job_id} is completed and cannot be cancelled")
    if job.status != JobStatus.CANCELLED:
        cancel_jobs(session, job_ids=[job.id], at=datetime.now(UTC))
        session.refresh(job)
    return job


def cancel_jobs(session: Session, *, job_ids: Sequence[int], at: datetime) -> None:
    """Cancel these jobs, unless completed or cancelled already: from now on their events are
    refused (`job_contract`), and their `job.cancelled` notifications are queued in this
    transaction. The seed cancels many at once, at times of the past."""
    cancelled = session.scalars(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.not_in([JobStatus.COMPLETED, JobStatus.CANCELLED]))
        .values(status=JobStatus.CANCELLED, cancelled_at=at, updated_at=at, deadline_at=None)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).all()
    webhooks.enqueue(session, job_ids=cancelled, event_type=WebhookEventType.JOB_CANCELLED, at=at)


@dataclass(frozen=True)
class StepState:
    step: JobConfigurationStep
    completion: JobStepCompletion | None
    latest_unresolved_error: Event | None
    # The step's recorded durations in this version's history (for the ETA), if any.
    timing: JobStepTiming | None


@dataclass(frozen=True)
class JobState:
    job: Job
    steps: list[StepState]
    latest_unresolved_job_error: Event | None


def get_job_state(session: Session, *, job: Job) -> JobState:
    """Every step of the job's pinned version with its completion, latest open error and
    recorded durations."""
    steps = session.execute(
        select(JobConfigurationStep, JobStepTiming)
        .outerjoin(JobStepTiming, JobStepTiming.step_id == JobConfigurationStep.id)
        .where(JobConfigurationStep.configuration_id == job.configuration_id)
        .order_by(JobConfigurationStep.position)
    ).all()
    completions = {
        completion.step_id: completion
        for completion in session.scalars(
            select(JobStepCompletion).where(JobStepCompletion.job_id == job.id)
        )
    }
    latest_error: dict[int | None, Event] = {}
    for error in session.scalars(
        select(Event)
        .where(Event.job_id == job.id, Event.kind == EventKind.ERROR, Event.resolved_at.is_(None))
        .order_by(Event.id)
    ):
        latest_error[error.step_id] = error
    return JobState(
        job=job,
        steps=[
            StepState(
                step=step,
                completion=completions.get(step.id),
                latest_unresolved_error=latest_error.get(step.id),
                timing=timing,
            )
            for step, timing in steps
        ],
        latest_unresolved_job_error=latest_error.get(None),
    )
