"""Events: each one applied to its job's progress, cost, status and counters in the same
transaction, with the job row locked, so concurrent events come out as if sent one by one."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError, model_validator
from sqlalchemy import Boolean, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, DomainError, InvalidInput
from app.internal.pagination import keyset_page
from app.models import (
    Event,
    EventKind,
    Job,
    JobConfigurationStep,
    JobStatus,
    JobStepCompletion,
)
from app.schemas.job import EventCreate
from app.services.access import Caller
from app.services.jobs import get_job, lock_job

MAX_BATCH = 1000


class StepCatalogue:
    """The steps of configuration versions, loaded once per request, by tag."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._by_configuration: dict[int, dict[str, JobConfigurationStep]] = {}

    def load(self, configuration_ids: Sequence[int]) -> None:
        missing = [id_ for id_ in set(configuration_ids) if id_ not in self._by_configuration]
        if not missing:
            return
        for id_ in missing:
            self._by_configuration[id_] = {}
        for step in self._session.scalars(
            select(JobConfigurationStep)
            .where(JobConfigurationStep.configuration_id.in_(missing))
            .order_by(JobConfigurationStep.position)
        ):
            self._by_configuration[step.configuration_id][step.tag] = step

    def steps_of(self, job: Job) -> Mapping[str, JobConfigurationStep]:
        self.load([job.configuration_id])
        return self._by_configuration[job.configuration_id]


def _step_for(steps: Mapping[str, JobConfigurationStep], name: str) -> JobConfigurationStep:
    step = steps.get(name)
    if step is None:
        valid = ", ".join(steps)
        raise InvalidInput(f"Unknown step {name!r} for this job; valid steps: {valid}")
    return step


def apply_event(
    session: Session, *, job: Job, event_in: EventCreate, steps: Mapping[str, JobConfigurationStep]
) -> tuple[Event, bool]:
    """Store the event and apply it to the (locked) job; a replayed event_id answers the stored
    event and changes nothing (created=False)."""
    if event_in.event_id is not None:
        existing = session.scalar(
            select(Event).where(Event.job_id == job.id, Event.event_id == event_in.event_id)
        )
        if existing is not None:
            return existing, False
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"Job {job.id} is cancelled: it accepts no more events")
    step = _step_for(steps, event_in.name) if event_in.name is not None else None

    now = datetime.now(UTC)
    event = Event(
        job_id=job.id,
        kind=event_in.kind,
        step_id=step.id if step else None,
        step_tag=step.tag if step else None,
        event_id=event_in.event_id,
        message=event_in.message,
        metadata_=event_in.metadata,
        occurred_at=event_in.occurred_at,
        received_at=now,
    )
    session.add(event)
    session.flush()

    job.event_count += 1
    job.started_at = job.started_at or now
    job.last_event_at = now
    if event.kind == EventKind.ERROR:
        job.error_count += 1
        job.unresolved_error_count += 1
    elif event.kind == EventKind.STEP:
        assert step is not None
        _complete_step(session, job=job, step=step, event=event, at=event_in.occurred_at or now)
        job.unresolved_error_count -= _resolve_errors(session, job=job, step=step, at=now)
    job.status = _status(job)
    session.flush()
    return event, True


def _complete_step(
    session: Session, *, job: Job, step: JobConfigurationStep, event: Event, at: datetime
) -> None:
    """Record the step's completion; only the first completion adds points and cost. The
    earliest completion time wins whatever the arrival order, so billing periods are stable."""
    statement = insert(JobStepCompletion).values(
        job_id=job.id,
        step_id=step.id,
        customer_id=job.customer_id,
        configuration_id=job.configuration_id,
        event_id=event.id,
        completed_at=at,
        points=step.points,
        cost=step.cost,
    )
    excluded = statement.excluded
    inserted = session.scalar(
        statement.on_conflict_do_update(
            index_elements=[JobStepCompletion.job_id, JobStepCompletion.step_id],
            set_={"completed_at": excluded.completed_at, "event_id": excluded.event_id},
            where=excluded.completed_at < JobStepCompletion.completed_at,
        ).returning(literal_column("xmax = 0", Boolean))
    )
    # No row: a later duplicate. True: the first completion. False: an earlier duplicate.
    if inserted is None:
        return
    if inserted:
        job.steps_completed += 1
        job.completed_points += step.points
        job.cost += step.cost
    if job.steps_completed == job.step_count:
        # Completed when its last step was, by the steps' (earliest) completion times.
        job.completed_at = session.scalar(
            select(func.max(JobStepCompletion.completed_at)).where(
                JobStepCompletion.job_id == job.id
            )
        )


def _resolve_errors(session: Session, *, job: Job, step: JobConfigurationStep, at: datetime) -> int:
    """A step event resolves the open errors of its step; once every step is complete, it
    also resolves the errors that named no step. Answers how many it resolved."""
    names_this_step = Event.step_id == step.id
    condition = (
        or_(names_this_step, Event.step_id.is_(None))
        if job.steps_completed == job.step_count
        else names_this_step
    )
    resolved = session.scalars(
        update(Event)
        .where(
            Event.job_id == job.id,
            Event.kind == EventKind.ERROR,
            Event.resolved_at.is_(None),
            condition,
        )
        .values(resolved_at=at)
        .returning(Event.id)
        .execution_options(synchronize_session=False)
    ).all()
    return len(resolved)


def job_status(
    *,
    cancelled: bool,
    unresolved_errors: int,
    steps_completed: int,
    step_count: int,
    event_count: int,
) -> JobStatus:
    """The status rule of the job contract, in one place."""
    if cancelled:
        return JobStatus.CANCELLED
    if unresolved_errors > 0:
        return JobStatus.FAILED
    if steps_completed == step_count:
        return JobStatus.COMPLETED
    return JobStatus.RUNNING if event_count > 0 else JobStatus.PENDING


def _status(job: Job) -> JobStatus:
    return job_status(
        cancelled=job.status == JobStatus.CANCELLED,
        unresolved_errors=job.unresolved_error_count,
        steps_completed=job.steps_completed,
        step_count=job.step_count,
        event_count=job.event_count,
    )


def record_event(
    session: Session, *, caller: Caller, job_id: int, event_in: EventCreate
) -> tuple[Event, Job, bool]:
    job = lock_job(session, caller=caller, job_id=job_id)
    catalogue = StepCatalogue(session)
    event, created = apply_event(session, job=job, event_in=event_in, steps=catalogue.steps_of(job))
    return event, get_job(session, caller=caller, job_id=job_id), created


def list_events(
    session: Session, *, caller: Caller, job_id: int, limit: int, cursor: str | None
) -> tuple[list[Event], str | None]:
    get_job(session, caller=caller, job_id=job_id)
    statement = select(Event).where(Event.job_id == job_id)
    return keyset_page(session, statement, order_by=[Event.id], limit=limit, cursor=cursor)


# Batches ---------------------------------------------------------------------------------------


class BatchEventIn(EventCreate):
    """One event of a batch: its job by `job_id` or by `provider_job_id` (exactly one)."""

    job_id: int | None = None
    provider_job_id: str | None = None

    @model_validator(mode="after")
    def _one_job_reference(self) -> "BatchEventIn":
        if (self.job_id is None) == (self.provider_job_id is None):
            raise ValueError("give exactly one of job_id and provider_job_id")
        return self


_batch_item = TypeAdapter(BatchEventIn)


@dataclass(frozen=True)
class BatchOutcome:
    index: int
    result: Literal["created", "duplicate", "rejected"]
    job_id: int | None = None
    event: Event | None = None
    reason: str | None = None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}" if location else str(first["msg"])


def record_batch(session: Session, *, caller: Caller, items: Sequence[Any]) -> list[BatchOutcome]:
    """Apply each item on its own: a rejected item changes nothing and stops no other."""
    parsed: list[BatchEventIn | BatchOutcome] = []
    for index, item in enumerate(items):
        try:
            parsed.append(_batch_item.validate_python(item))
        except ValidationError as error:
            parsed.append(BatchOutcome(index=index, result="rejected", reason=_describe(error)))

    jobs = _lock_jobs(session, caller, [item for item in parsed if isinstance(item, BatchEventIn)])
    catalogue = StepCatalogue(session)
    catalogue.load([job.configuration_id for job in jobs.values()])

    outcomes = []
    for index, item in enumerate(parsed):
        if isinstance(item, BatchOutcome):
            outcomes.append(item)
            continue
        reference = item.job_id if item.job_id is not None else item.provider_job_id
        job = jobs.get(reference)
        if job is None:
            outcomes.append(
                BatchOutcome(index=index, result="rejected", reason=f"Job {reference!r} not found")
            )
            continue
        savepoint = session.begin_nested()
        try:
            event, created = apply_event(
                session, job=job, event_in=item, steps=catalogue.steps_of(job)
            )
        except DomainError as error:
            savepoint.rollback()
            session.refresh(job)
            outcomes.append(
                BatchOutcome(index=index, result="rejected", job_id=job.id, reason=error.detail)
            )
            continue
        savepoint.commit()
        outcomes.append(
            BatchOutcome(
                index=index,
                result="created" if created else "duplicate",
                job_id=job.id,
                event=event,
            )
        )
    return outcomes


def _lock_jobs(
    session: Session, caller: Caller, items: Sequence[BatchEventIn]
) -> dict[int | str | None, Job]:
    """The batch's visible jobs by id and by provider_job_id, locked in id order (so two
    batches touching the same jobs cannot deadlock)."""
    ids = {item.job_id for item in items if item.job_id is not None}
    provider_ids = {item.provider_job_id for item in items if item.provider_job_id is not None}
    if not ids and not provider_ids:
        return {}
    found = session.scalars(
        select(Job)
        .where(
            or_(Job.id.in_(ids), Job.provider_job_id.in_(provider_ids)),
            caller.customer_filter(Job.customer_id),
        )
        .order_by(Job.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    jobs: dict[int | str | None, Job] = {}
    for job in found:
        jobs[job.id] = job
        jobs[job.provider_job_id] = job
    return jobs
