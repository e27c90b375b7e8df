from functools import partial

from fastapi import APIRouter, Response, status

from app.dependencies import Cursor, Ingester, Limit, Reader, SessionDep, in_one_trip
from app.internal.pagination import DEFAULT_LIMIT
from app.schemas.error import error_responses
from app.schemas.event import (
    BatchItemResult,
    BatchRequest,
    BatchResult,
    EventCreate,
    EventPage,
    EventPublic,
    EventsPruned,
)
from app.schemas.job import EventResult
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
async def create_event(
    session: SessionDep, caller: Ingester, job_id: int, event_in: EventCreate, response: Response
) -> EventResult:
    """Report an event; answers it with the job's new progress, cost and status."""
    record = partial(events.record_event, session, caller=caller, job_id=job_id, event_in=event_in)
    event, job, created = await in_one_trip(session, record)
    if not created:
        response.status_code = status.HTTP_200_OK
    return EventResult(event=event, job=job)


@router.get("/jobs/{job_id}/events", response_model=EventPage, responses=error_responses(404, 422))
def read_events(
    session: SessionDep,
    caller: Reader,
    job_id: int,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> EventPage:
    """A job's events in arrival order, and what the retention policy deleted of them."""
    listed = events.list_events(session, caller=caller, job_id=job_id, limit=limit, cursor=cursor)
    return EventPage(
        items=[EventPublic.model_validate(item) for item in listed.events],
        next_cursor=listed.next_cursor,
        pruned=EventsPruned.of(listed.job),
    )


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
