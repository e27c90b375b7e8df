"""The job contract, applied by the database in one call per request.

The rules live in PL/pgSQL, one file each under app/models/sql/functions/:

- `record_event.sql`: one event of one job: refusals (cancelled job, unknown step), replays of
  an event_id, the stored event, the step's completion (each step once, at its earliest time,
  timed from the previous one for the funnel), the errors a step resolves, per-step error
  counts; it changes the job's counters in memory only;
- `settle_job.sql`: the job's row, written once a call, with its status (`job_status.sql`), its
  deadline (`job_deadline.sql`) and the notifications of a job that has just completed or
  failed (`enqueue_webhooks.sql`);
- `apply_event.sql` (a single event) and `apply_events.sql` (a batch, each job's events in
  order) lock the jobs and call those two, so both paths apply the same rules.

This module is how Python calls them; every writer goes through here: the API's single events
and batches, and the seed. A call runs in the caller's transaction (`get_db` still commits),
locks the jobs it names until the transaction ends, and answers one outcome per event.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, DomainError, InvalidInput, NotFound
from app.models import Event, Job, JobStepCompletion, JobStepError
from app.schemas.event import EventCreate

Problem = Literal["not_found", "cancelled", "unknown_step"]
Result = Literal["created", "duplicate", "rejected"]

_APPLY_EVENTS = text("SELECT * FROM apply_events(CAST(:events AS jsonb), :visible_customer_id)")
_APPLY_EVENT = text("SELECT * FROM apply_event(CAST(:event AS jsonb), :visible_customer_id)")
# The ids a job can have: PostgreSQL's bigint.
_MIN_ID, _MAX_ID = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class EventToApply:
    """An event for a job named by id or by provider_job_id."""

    event: EventCreate
    job_id: int | None = None
    provider_job_id: str | None = None
    # When the server received it: now, unless history is being replayed (the seed).
    received_at: datetime | None = None

    @property
    def reference(self) -> int | str | None:
        return self.job_id if self.job_id is not None else self.provider_job_id

    def as_json_object(self) -> dict[str, Any]:
        event = self.event
        job_id = self.job_id
        if job_id is not None and not _MIN_ID <= job_id <= _MAX_ID:
            job_id = None  # no job has it: sent as no id, the event's job is not found
        fields = {
            "job_id": job_id,
            "provider_job_id": self.provider_job_id,
            "kind": event.kind.value,
            "name": event.name,
            "event_id": event.event_id,
            "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
            "received_at": self.received_at.isoformat() if self.received_at else None,
            "message": event.message,
            "metadata": event.metadata,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class Applied:
    """What became of one event: its stored event's id (new, or the original of a duplicate),
    or why it was rejected."""

    result: Result
    event_id: int | None
    job_id: int | None
    problem: Problem | None = None
    detail: str | None = None


def apply_events(
    session: Session, events: Sequence[EventToApply], *, visible_customer_id: int | None
) -> list[Applied]:
    """Apply the events in order; jobs not of `visible_customer_id` (when given) are not found."""
    if not events:
        return []
    session.flush()
    rows = session.connection().execute(
        _APPLY_EVENTS,
        {
            "events": json.dumps([event.as_json_object() for event in events]),
            "visible_customer_id": visible_customer_id,
        },
    )
    applied = [
        Applied(row.outcome, row.event_id, row.job_id, row.problem, row.detail) for row in rows
    ]
    _expire_written(session)
    return applied


def apply_event(
    session: Session, event: EventToApply, *, visible_customer_id: int | None
) -> RowMapping:
    """Apply one event; answers its outcome with the stored event and its job as they now are,
    in the columns of the database function `apply_event`."""
    session.flush()
    row = session.connection().execute(
        _APPLY_EVENT,
        {"event": json.dumps(event.as_json_object()), "visible_customer_id": visible_customer_id},
    )
    answer = row.mappings().one()
    _expire_written(session)
    return answer


_WRITTEN = (Job, Event, JobStepCompletion, JobStepError)


def _expire_written(session: Session) -> None:
    """Objects of the rows the function writes, if the session holds any (seed, tests), are
    read afresh on their next use. (A request's session holds none.)"""
    for instance in list(session.identity_map.values()):
        if isinstance(instance, _WRITTEN):
            session.expire(instance)


def refusal(
    event: EventToApply, *, job_id: int | None, problem: Problem, detail: str | None
) -> DomainError:
    """The domain error that says why an event was rejected."""
    if problem == "not_found":
        return NotFound(f"Job {event.reference!r} not found")
    if problem == "cancelled":
        return Conflict(f"Job {job_id} is cancelled: it accepts no more events")
    return InvalidInput(
        f"Unknown step {event.event.name!r} for this job; valid steps: {detail or ''}"
    )
