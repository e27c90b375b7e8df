from fastapi import APIRouter, Response, status

from app.dependencies import Cursor, Ingester, Limit, Reader, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.schemas.error import error_responses
from app.schemas.event import (
    BatchItemResult,
    BatchRequest,
    BatchResult,
    EventCreate,
    EventPublic,
)
from app.schemas.job import EventResult
from app.schemas.page import Page
from app.services import events

router = APIRouter(tags=["events"], responses=error_responses(401, 403))


@router.post(
    "/jobs/{job_id}/events",
    response_model=EventResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_200_OK: {"model": EventResult, "description": "A replayed event_id"},
        **error_responses(400, 404, 409, 422),
    },
)
def create_event(
    session: SessionDep, caller: Ingester, job_id: int, event_in: EventCreate, response: Response
) -> EventResult:
    """Report an event; answers it with the job's new progress, cost and status."""
    event, job, created = events.record_event(
        session, caller=caller, job_id=job_id, event_in=event_in
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return EventResult(event=event, job=job)


@router.get(
    "/jobs/{job_id}/events", response_model=Page[EventPublic], responses=error_responses(404, 422)
)
def read_events(
    session: SessionDep,
    caller: Reader,
    job_id: int,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[EventPublic]:
    """A job's events in arrival order."""
    items, next_cursor = events.list_events(
        session, caller=caller, job_id=job_id, limit=limit, cursor=cursor
    )
    return Page(items=[EventPublic.model_validate(item) for item in items], next_cursor=next_cursor)


@router.post("/events/batch", response_model=BatchResult, responses=error_responses(400))
def create_events_batch(session: SessionDep, caller: Ingester, batch: BatchRequest) -> BatchResult:
    """Report up to 1,000 events for any jobs you may write; one result per item, in order."""
    outcomes = events.record_batch(session, caller=caller, items=batch.events)
    results = [
        BatchItemResult(
            index=outcome.index,
            result=outcome.result,
            job_id=outcome.job_id,
            event_id=outcome.event_id,
            reason=outcome.reason,
        )
        for outcome in outcomes
    ]
    return BatchResult(
        created=sum(result.result == "created" for result in results),
        duplicate=sum(result.result == "duplicate" for result in results),
        rejected=sum(result.result == "rejected" for result in results),
        results=results,
    )
