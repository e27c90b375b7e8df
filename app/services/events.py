"""Events: single events and batches, applied to their jobs' progress, cost, status and counters
in the same transaction by the job contract (`job_contract`, one database call per
request), and read back in arrival order."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import RowMapping, select
from sqlalchemy.orm import Session

from app.internal import metrics
from app.internal.errors import DomainError
from app.internal.pagination import keyset_page
from app.models import Event, Job
from app.schemas.event import BatchEventIn, EventCreate, EventPublic
from app.schemas.job import JobPublic
from app.services import job_contract
from app.services.access import Caller
from app.services.job_contract import EventToApply, Result
from app.services.jobs import get_job
from config.validation import describe_validation_error


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted event."""

    result: Result
    event_id: int | None = None
    error: DomainError | None = None


def apply_to_jobs(
    session: Session, submissions: Sequence[tuple[Job, EventCreate]]
) -> list[Outcome]:
    """Apply events, in order, to jobs the caller holds (the demo seed, tests), with the domain
    error of each refusal."""
    events = [EventToApply(event_in, job_id=job.id) for job, event_in in submissions]
    applied = job_contract.apply_events(session, events, visible_customer_id=None)
    return [
        Outcome(
            each.result,
            each.event_id,
            job_contract.refusal(
                event, job_id=each.job_id, problem=each.problem, detail=each.detail
            )
            if each.problem
            else None,
        )
        for event, each in zip(events, applied, strict=True)
    ]


def record_event(
    session: Session, *, caller: Caller, job_id: int, event_in: EventCreate
) -> tuple[EventPublic, JobPublic, bool]:
    """One event for one job; answers the event, the job as it now is, and whether the event is
    new (False for a replayed event_id). One database call, with no ORM objects read back."""
    event = EventToApply(event_in, job_id=job_id)
    row = job_contract.apply_event(session, event, visible_customer_id=caller.visible_customer_id)
    _measure([row["problem"]])
    if row["problem"] is not None:
        raise job_contract.refusal(
            event, job_id=row["job_id"], problem=row["problem"], detail=row["detail"]
        )
    return _event_public(row), _job_public(row), row["outcome"] == "created"


def _event_public(row: RowMapping) -> EventPublic:
    return EventPublic.model_validate(
        {
            "id": row["event_id"],
            "job_id": row["job_id"],
            "kind": row["event_kind"],
            "step_tag": row["event_name"],
            "event_id": row["event_key"],
            "message": row["event_message"],
            "metadata_": row["event_metadata"],
            "occurred_at": row["event_occurred_at"],
            "received_at": row["event_received_at"],
            "resolved_at": row["event_resolved_at"],
        }
    )


_JOB_COLUMNS = [
    "provider_job_id", "customer_id", "tag", "version", "configuration_id", "status", "progress",
    "completed_points", "total_points", "steps_completed", "step_count", "cost", "event_count",
    "error_count", "unresolved_error_count", "created_at", "updated_at", "started_at",
    "last_event_at", "completed_at", "cancelled_at", "deadline_at",
]  # fmt: skip


def _job_public(row: RowMapping) -> JobPublic:
    fields = {name: row[name] for name in _JOB_COLUMNS}
    return JobPublic.model_validate(
        {**fields, "id": row["job_id"], "metadata_": row["job_metadata"]}
    )


@dataclass(frozen=True)
class JobEvents:
    """A page of a job's events, with the job, which records what retention deleted."""

    job: Job
    events: list[Event]
    next_cursor: str | None


def list_events(
    session: Session, *, caller: Caller, job_id: int, limit: int, cursor: str | None
) -> JobEvents:
    job = get_job(session, caller=caller, job_id=job_id)
    statement = select(Event).where(Event.job_id == job_id)
    page, next_cursor = keyset_page(
        session, statement, order_by=[Event.id], limit=limit, cursor=cursor
    )
    return JobEvents(job, page, next_cursor)


# Batches ---------------------------------------------------------------------------------------

_batch_item = TypeAdapter(BatchEventIn)


@dataclass(frozen=True)
class BatchOutcome:
    index: int
    result: Result
    job_id: int | None = None
    event_id: int | None = None
    reason: str | None = None


def record_batch(session: Session, *, caller: Caller, items: Sequence[Any]) -> list[BatchOutcome]:
    """Apply each item on its own terms: a rejected item changes nothing and stops no other."""
    outcomes: dict[int, BatchOutcome] = {}
    problems: list[str | None] = []
    valid: list[tuple[int, EventToApply]] = []
    for index, item in enumerate(items):
        try:
            parsed = _batch_item.validate_python(item)
        except ValidationError as error:
            outcomes[index] = BatchOutcome(
                index, "rejected", reason=describe_validation_error(error, most=1)
            )
            problems.append("invalid")
        else:
            valid.append((index, EventToApply(parsed, parsed.job_id, parsed.provider_job_id)))
    applied = job_contract.apply_events(
        session, [event for _, event in valid], visible_customer_id=caller.visible_customer_id
    )
    for (index, event), each in zip(valid, applied, strict=True):
        reason = None
        if each.problem is not None:
            reason = job_contract.refusal(
                event, job_id=each.job_id, problem=each.problem, detail=each.detail
            ).detail
        outcomes[index] = BatchOutcome(index, each.result, each.job_id, each.event_id, reason)
        problems.append(each.problem)
    _measure(problems, batch=True)
    return [outcomes[index] for index in range(len(items))]


def _measure(problems: Sequence[str | None], *, batch: bool = False) -> None:
    """The metrics of events handled: accepted (new or replayed), rejected by reason (the job
    contract's problem, or `invalid` for an item that is no event), and a batch's size."""
    rejected: dict[str, int] = {}
    for problem in problems:
        if problem is not None:
            rejected[problem] = rejected.get(problem, 0) + 1
    handled: dict[metrics.Metric, metrics.Value] = {
        metrics.EVENTS_ACCEPTED: len(problems) - sum(rejected.values())
    }
    if batch:
        handled[metrics.BATCH_SIZE] = len(problems)
    metrics.emit(handled)
    for reason, count in sorted(rejected.items()):
        metrics.emit({metrics.EVENTS_REJECTED: count}, Reason=reason)
