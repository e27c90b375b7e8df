"""Events: applied to their jobs' progress, cost, status and counters in the same transaction,
with each job's row locked, so concurrent events come out as if they had arrived one by one.

One mechanism serves a single event and a batch of a thousand: `apply_events` checks every event
before it writes anything, stores the accepted ones in one INSERT, records step completions in one
upsert and the errors of each step in another, works out in memory which errors the new events
resolve (in arrival order), and writes each job's row once.

For the steps funnel it also keeps, without reading events: each completion's seconds since the
job's previous one (worked out as it is inserted; one window UPDATE re-times the jobs whose steps
arrived late or moved), and whether each step that had errors was completed too.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import StrictInt, TypeAdapter, ValidationError, model_validator
from sqlalchemy import Boolean, Double, cast, func, literal_column, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, DomainError, InvalidInput
from app.internal.pagination import keyset_page
from app.models import (
    Event,
    EventKind,
    Job,
    JobConfiguration,
    JobConfigurationStep,
    JobStatus,
    JobStepCompletion,
    JobStepError,
)
from app.schemas.job import EventCreate, ProviderJobId
from app.services.access import Caller
from app.services.jobs import get_job, lock_job, locked_jobs

MAX_BATCH = 1000


@dataclass(frozen=True)
class StepInfo:
    id: int
    tag: str
    points: int
    cost: Decimal


# Configuration versions are immutable, so their steps can be kept for the life of the process
# (a Lambda instance, a uvicorn worker) instead of being read for every event. The key holds the
# creation time too, so a re-created database never meets stale entries.
_StepsKey = tuple[int, datetime]
_steps_cache: dict[_StepsKey, Mapping[str, StepInfo]] = {}
_STEPS_CACHE_LIMIT = 1000


def steps_of(
    session: Session, configurations: Iterable[JobConfiguration]
) -> dict[int, Mapping[str, StepInfo]]:
    """The steps of each configuration version by tag, in order, by configuration id."""
    keys = {configuration.id: (configuration.id, configuration.created_at)
            for configuration in configurations}  # fmt: skip
    found = {id_: _steps_cache.get(key) for id_, key in keys.items()}
    result = {id_: steps for id_, steps in found.items() if steps is not None}
    missing = keys.keys() - result.keys()
    if missing:
        loaded: dict[int, dict[str, StepInfo]] = {id_: {} for id_ in missing}
        for step in session.scalars(
            select(JobConfigurationStep)
            .where(JobConfigurationStep.configuration_id.in_(missing))
            .order_by(JobConfigurationStep.configuration_id, JobConfigurationStep.position)
        ):
            loaded[step.configuration_id][step.tag] = StepInfo(
                step.id, step.tag, step.points, step.cost
            )
        if len(_steps_cache) + len(loaded) > _STEPS_CACHE_LIMIT:
            _steps_cache.clear()
        _steps_cache.update({keys[id_]: steps for id_, steps in loaded.items()})
        result.update(loaded)
    return result


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


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted event."""

    result: Literal["created", "duplicate", "rejected"]
    event: Event | None = None
    error: DomainError | None = None


@dataclass
class _Accepted:
    index: int
    job: Job
    event_in: EventCreate
    step: StepInfo | None
    event: Event | None = None


def apply_events(session: Session, submissions: Sequence[tuple[Job, EventCreate]]) -> list[Outcome]:
    """Apply events, in order, to their jobs, which the caller has locked (`lock_jobs`).

    A replayed `event_id` (for the same job) answers the stored event and changes nothing. An
    invalid event is rejected before anything is written, so it changes nothing either.
    """
    steps = steps_of(session, [job.configuration for job, _ in submissions])
    outcomes: dict[int, Outcome] = {}
    accepted: list[_Accepted] = []
    first_with_id: dict[tuple[int, str], int] = {}
    same_as: dict[int, int] = {}
    for index, (job, event_in) in enumerate(submissions):
        key = (job.id, event_in.event_id) if event_in.event_id is not None else None
        if key is not None and key in first_with_id:
            same_as[index] = first_with_id[key]
            continue
        try:
            step = _check(job, event_in, steps[job.configuration_id])
        except DomainError as error:
            outcomes[index] = Outcome("rejected", error=error)
        else:
            accepted.append(_Accepted(index, job, event_in, step))
        if key is not None:
            first_with_id[key] = index

    # Replays: the same event_id already stored answers the stored event, even where the new
    # request would be refused (the job was cancelled since, say).
    stored = _stored_events(
        session, [submission for i, submission in enumerate(submissions) if i not in same_as]
    )
    for index, (job, event_in) in enumerate(submissions):
        existing = stored.get((job.id, event_in.event_id or ""))
        if index not in same_as and existing is not None:
            outcomes[index] = Outcome("duplicate", event=existing)
    accepted = [item for item in accepted if item.index not in outcomes]

    if accepted:
        _store(session, accepted)
        for item in accepted:
            outcomes[item.index] = Outcome("created", event=item.event)
    for index, original in same_as.items():
        first = outcomes[original]
        outcomes[index] = first if first.result == "rejected" else Outcome("duplicate", first.event)
    return [outcomes[index] for index in range(len(submissions))]


def _check(job: Job, event_in: EventCreate, steps: Mapping[str, StepInfo]) -> StepInfo | None:
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"Job {job.id} is cancelled: it accepts no more events")
    if event_in.name is None:
        return None
    step = steps.get(event_in.name)
    if step is None:
        raise InvalidInput(
            f"Unknown step {event_in.name!r} for this job; valid steps: {', '.join(steps)}"
        )
    return step


def _stored_events(
    session: Session, submissions: Sequence[tuple[Job, EventCreate]]
) -> dict[tuple[int, str], Event]:
    keys = {(job.id, event_in.event_id) for job, event_in in submissions if event_in.event_id}
    if not keys:
        return {}
    return {
        (event.job_id, event.event_id or ""): event
        for event in session.scalars(
            select(Event).where(tuple_(Event.job_id, Event.event_id).in_(keys))
        )
    }


def _store(session: Session, accepted: Sequence[_Accepted]) -> None:
    now = datetime.now(UTC)
    for item in accepted:
        item.event = Event(
            job_id=item.job.id,
            kind=item.event_in.kind,
            step_id=item.step.id if item.step else None,
            step_tag=item.step.tag if item.step else None,
            event_id=item.event_in.event_id,
            message=item.event_in.message,
            metadata_=item.event_in.metadata,
            occurred_at=item.event_in.occurred_at,
            received_at=now,
        )
    session.add_all([item.event for item in accepted if item.event is not None])
    session.flush()  # one INSERT for all of them

    by_job: dict[int, list[_Accepted]] = defaultdict(list)
    for item in accepted:
        by_job[item.job.id].append(item)
    errors_before = {job_id: items[0].job.error_count for job_id, items in by_job.items()}
    completions = _record_completions(session, accepted, now)
    _time_completions(session, completions.untimed)
    latest = _latest_completion_times(session, completions.moved_earlier)
    errored = _record_errors(session, accepted, now)
    _mark_completed_errors(
        session, errored | {job_id for job_id, _ in completions.first if errors_before[job_id]}
    )
    for items in by_job.values():
        _update_job(session, items, completions, latest, now)
    session.flush()  # one UPDATE per job, and the errors the new events resolved


_insert_completion = insert(JobStepCompletion)
# One statement, built once (so compiled once), run with one row of parameters per completion.
_UPSERT_COMPLETION = _insert_completion.on_conflict_do_update(
    index_elements=[JobStepCompletion.job_id, JobStepCompletion.step_id],
    set_={
        "completed_at": _insert_completion.excluded.completed_at,
        "event_id": _insert_completion.excluded.event_id,
    },
    where=_insert_completion.excluded.completed_at < JobStepCompletion.completed_at,
).returning(
    JobStepCompletion.job_id, JobStepCompletion.step_id, literal_column("xmax = 0", Boolean)
)


@dataclass(frozen=True)
class _Completions:
    first: set[tuple[int, int]]  # (job, step) pairs completed for the first time
    newest: dict[int, datetime]  # per job, the latest of those first completions
    moved_earlier: set[int]  # jobs with a step now completed at an earlier time than stored
    untimed: set[int]  # jobs whose completions _time_completions must time again


def _record_completions(
    session: Session, accepted: Sequence[_Accepted], now: datetime
) -> _Completions:
    """Record each step completion, keeping the earliest time per job and step whatever the
    arrival order (billing periods stay stable).

    Each new completion is timed from the one before it among this call's, the first of them
    from the job's latest completion (or its creation): right in the usual case, where they all
    come after the job's stored ones and none was completed before. The jobs where that does not
    hold are answered as `untimed`.
    """
    earliest: dict[tuple[int, int], _Accepted] = {}
    for item in accepted:
        if item.event_in.kind != EventKind.STEP or item.step is None:
            continue
        key = (item.job.id, item.step.id)
        current = earliest.get(key)
        if current is None or _occurred_at(item, now) < _occurred_at(current, now):
            earliest[key] = item
    if not earliest:
        return _Completions(set(), {}, set(), set())

    by_job: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for job_id, step_id in earliest:
        by_job[job_id].append((_occurred_at(earliest[(job_id, step_id)], now), step_id))
    seconds: dict[tuple[int, int], float] = {}
    untimed: set[int] = set()
    for job_id, times in by_job.items():
        job = earliest[(job_id, times[0][1])].job
        previous = job.last_step_completed_at
        if previous is not None and min(times)[0] <= previous:
            untimed.add(job_id)
        previous = previous or job.created_at
        for at, step_id in sorted(times):
            seconds[(job_id, step_id)] = (at - previous).total_seconds()
            previous = at

    rows = session.execute(
        _UPSERT_COMPLETION,
        [
            {
                "job_id": item.job.id,
                "step_id": item.step.id,
                "customer_id": item.job.customer_id,
                "configuration_id": item.job.configuration_id,
                "event_id": item.event.id,
                "completed_at": _occurred_at(item, now),
                "points": item.step.points,
                "cost": item.step.cost,
                "job_created_at": item.job.created_at,
                "seconds_since_previous": seconds[key],
            }
            for key, item in earliest.items()
            if item.step is not None and item.event is not None
        ],
    ).all()
    # Rows not returned: completed before, at an earlier time. False: completed before, now at
    # an earlier time. True: completed for the first time.
    first = {(job_id, step_id) for job_id, step_id, inserted in rows if inserted}
    moved_earlier = {job_id for job_id, _, inserted in rows if not inserted}
    newest: dict[int, datetime] = {}
    for job_id, step_id in first:
        at = _occurred_at(earliest[(job_id, step_id)], now)
        newest[job_id] = max(at, newest.get(job_id, at))
    # A step completed before, in the chain of a job's new completions, puts those after it
    # wrong. (One that moved earlier is before the job's latest: untimed already.)
    repeated = {job_id for job_id, step_id in earliest if (job_id, step_id) not in first}
    untimed |= repeated & newest.keys()
    return _Completions(first, newest, moved_earlier, untimed)


def _occurred_at(item: _Accepted, now: datetime) -> datetime:
    return item.event_in.occurred_at or now


def _time_completions(session: Session, job_ids: set[int]) -> None:
    """Set the seconds since the previous completion of every completion of these jobs whose
    value changed: the new ones, and those after a step that arrived late or moved earlier."""
    if not job_ids:
        return
    completion = JobStepCompletion
    previous = func.lag(completion.completed_at).over(
        partition_by=completion.job_id, order_by=(completion.completed_at, completion.step_id)
    )
    since = completion.completed_at - func.coalesce(previous, completion.job_created_at)
    timed = (
        select(
            completion.job_id,
            completion.step_id,
            cast(func.extract("epoch", since), Double).label("seconds"),
        )
        .where(completion.job_id.in_(job_ids))
        .subquery()
    )
    session.execute(
        update(completion)
        .where(
            completion.job_id == timed.c.job_id,
            completion.step_id == timed.c.step_id,
            completion.seconds_since_previous.is_distinct_from(timed.c.seconds),
        )
        .values(seconds_since_previous=timed.c.seconds)
        .execution_options(synchronize_session=False)
    )


_insert_error = insert(JobStepError)
# Built once, like _UPSERT_COMPLETION: one row of parameters per (job, step) of the batch.
_UPSERT_ERRORS = _insert_error.on_conflict_do_update(
    index_elements=[JobStepError.job_id, JobStepError.step_id],
    set_={
        "error_count": JobStepError.error_count + _insert_error.excluded.error_count,
        "first_error_at": func.least(
            JobStepError.first_error_at, _insert_error.excluded.first_error_at
        ),
        "last_error_at": func.greatest(
            JobStepError.last_error_at, _insert_error.excluded.last_error_at
        ),
    },
)


def _record_errors(session: Session, accepted: Sequence[_Accepted], now: datetime) -> set[int]:
    """Count the new errors that name a step, per job and step, so that analytics never count
    events; answers the jobs concerned."""
    counted: dict[tuple[int, int], dict[str, Any]] = {}
    for item in accepted:
        if item.event_in.kind != EventKind.ERROR or item.step is None:
            continue
        at = _occurred_at(item, now)
        row = counted.setdefault(
            (item.job.id, item.step.id),
            {
                "job_id": item.job.id,
                "step_id": item.step.id,
                "customer_id": item.job.customer_id,
                "configuration_id": item.job.configuration_id,
                "error_count": 0,
                "first_error_at": at,
                "last_error_at": at,
                "job_created_at": item.job.created_at,
            },
        )
        row["error_count"] += 1
        row["first_error_at"] = min(row["first_error_at"], at)
        row["last_error_at"] = max(row["last_error_at"], at)
    if counted:
        session.execute(_UPSERT_ERRORS, [counted[key] for key in sorted(counted)])
    return {job_id for job_id, _ in counted}


def _mark_completed_errors(session: Session, job_ids: set[int]) -> None:
    """Mark the step errors of these jobs whose step is now completed too."""
    if not job_ids:
        return
    completion, error = JobStepCompletion, JobStepError
    session.execute(
        update(error)
        .where(
            error.job_id.in_(job_ids),
            error.step_completed.is_(False),
            select(completion)
            .where(completion.job_id == error.job_id, completion.step_id == error.step_id)
            .exists(),
        )
        .values(step_completed=True)
        .execution_options(synchronize_session=False)
    )


def _latest_completion_times(session: Session, job_ids: set[int]) -> dict[int, datetime]:
    """The latest completion time of each of these jobs, one of whose steps moved earlier."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobStepCompletion.job_id, func.max(JobStepCompletion.completed_at))
        .where(JobStepCompletion.job_id.in_(job_ids))
        .group_by(JobStepCompletion.job_id)
    )
    return dict(rows.all())


def _update_job(
    session: Session,
    items: Sequence[_Accepted],
    completions: _Completions,
    latest: Mapping[int, datetime],
    now: datetime,
) -> None:
    """Apply one job's new events, in arrival order, to its row."""
    job = items[0].job
    steps_done = job.steps_completed
    unresolved_before = job.unresolved_error_count
    open_errors: dict[int | None, list[Event]] = defaultdict(list)
    stepped: set[int] = set()
    all_done_at_some_step = False
    counted: set[int] = set()
    for item in items:
        event, step = item.event, item.step
        assert event is not None
        if event.kind == EventKind.ERROR:
            job.error_count += 1
            open_errors[step.id if step else None].append(event)
        elif event.kind == EventKind.STEP and step is not None:
            if (job.id, step.id) in completions.first and step.id not in counted:
                counted.add(step.id)
                steps_done += 1
                job.completed_points += step.points
                job.cost += step.cost
            stepped.add(step.id)
            for error in open_errors.pop(step.id, []):
                error.resolved_at = now
            if steps_done == job.step_count:
                all_done_at_some_step = True
                for error in open_errors.pop(None, []):
                    error.resolved_at = now
    new_open = sum(len(errors) for errors in open_errors.values())
    resolved_before = 0
    if unresolved_before and stepped:
        resolved_before = _resolve_stored_errors(
            session, job=job, steps=stepped, stepless=all_done_at_some_step, now=now,
            before_id=min(item.event.id for item in items if item.event is not None),
        )  # fmt: skip
    job.unresolved_error_count = unresolved_before - resolved_before + new_open
    job.event_count += len(items)
    job.started_at = job.started_at or now
    job.last_event_at = now
    job.steps_completed = steps_done
    if job.id in latest:
        job.last_step_completed_at = latest[job.id]
    elif job.id in completions.newest:
        newest = completions.newest[job.id]
        job.last_step_completed_at = max(newest, job.last_step_completed_at or newest)
    if steps_done == job.step_count:
        # Completed when its last step was, by the steps' (earliest) completion times.
        job.completed_at = job.last_step_completed_at
    job.status = job_status(
        cancelled=False,
        unresolved_errors=job.unresolved_error_count,
        steps_completed=job.steps_completed,
        step_count=job.step_count,
        event_count=job.event_count,
    )


def _resolve_stored_errors(
    session: Session, *, job: Job, steps: set[int], stepless: bool, now: datetime, before_id: int
) -> int:
    """Resolve the job's open errors stored before these events: those of a step that a new
    event completed, and, once every step is complete, those that named no step."""
    names_a_step = Event.step_id.in_(steps)
    resolved = session.scalars(
        update(Event)
        .where(
            Event.job_id == job.id,
            Event.id < before_id,
            Event.kind == EventKind.ERROR,
            Event.resolved_at.is_(None),
            or_(names_a_step, Event.step_id.is_(None)) if stepless else names_a_step,
        )
        .values(resolved_at=now)
        .returning(Event.id)
        .execution_options(synchronize_session=False)
    ).all()
    return len(resolved)


def record_event(
    session: Session, *, caller: Caller, job_id: int, event_in: EventCreate
) -> tuple[Event, Job, bool]:
    """One event for one job; answers the event, the job as it now is, and whether the event is
    new (False for a replayed event_id)."""
    job = lock_job(session, caller=caller, job_id=job_id)
    [outcome] = apply_events(session, [(job, event_in)])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.event is not None
    return outcome.event, job, outcome.result == "created"


def list_events(
    session: Session, *, caller: Caller, job_id: int, limit: int, cursor: str | None
) -> tuple[list[Event], str | None]:
    get_job(session, caller=caller, job_id=job_id)
    statement = select(Event).where(Event.job_id == job_id)
    return keyset_page(session, statement, order_by=[Event.id], limit=limit, cursor=cursor)


# Batches ---------------------------------------------------------------------------------------


class BatchEventIn(EventCreate):
    """One event of a batch: its job by `job_id` or by `provider_job_id` (exactly one)."""

    job_id: StrictInt | None = None
    provider_job_id: ProviderJobId | None = None

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
    """Apply each item on its own terms: a rejected item changes nothing and stops no other."""
    outcomes: dict[int, BatchOutcome] = {}
    parsed: dict[int, BatchEventIn] = {}
    for index, item in enumerate(items):
        try:
            parsed[index] = _batch_item.validate_python(item)
        except ValidationError as error:
            outcomes[index] = BatchOutcome(index, "rejected", reason=_describe(error))

    jobs = locked_jobs(
        session,
        caller=caller,
        ids=[item.job_id for item in parsed.values() if item.job_id is not None],
        provider_ids=[item.provider_job_id for item in parsed.values() if item.provider_job_id],
    )
    by_reference: dict[int | str, Job] = {job.id: job for job in jobs}
    by_reference.update({job.provider_job_id: job for job in jobs})

    submitted: list[tuple[int, Job, EventCreate]] = []
    for index, item in parsed.items():
        reference = item.job_id if item.job_id is not None else item.provider_job_id
        job = by_reference.get(reference or "")
        if job is None:
            outcomes[index] = BatchOutcome(index, "rejected", reason=f"Job {reference!r} not found")
        else:
            submitted.append((index, job, item))
    applied = apply_events(session, [(job, event_in) for _, job, event_in in submitted])
    for (index, job, _), outcome in zip(submitted, applied, strict=True):
        outcomes[index] = BatchOutcome(
            index,
            outcome.result,
            job_id=job.id,
            event=outcome.event,
            reason=outcome.error.detail if outcome.error else None,
        )
    return [outcomes[index] for index in range(len(items))]
