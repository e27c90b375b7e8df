from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from app.dependencies import Cursor, Ingester, Limit, Reader, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.models import JobStatus
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL, UtcDatetime
from app.schemas.job import JobCreate, JobDetail, JobPublic, JobSort
from app.schemas.page import Page
from app.services import jobs
from app.services.job_details import job_detail
from app.services.jobs import JobFilters

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses(401, 403))

# OpenAPI links: what a client can do next with the job it created (or found).
JOB_LINKS = {
    "ReadJob": {
        "operationRef": "#/paths/~1jobs~1{job_id}/get",
        "parameters": {"job_id": "$response.body#/id"},
        "description": "The job, with the state of every step",
    },
    "CreateEvent": {
        "operationRef": "#/paths/~1jobs~1{job_id}~1events/post",
        "parameters": {"job_id": "$response.body#/id"},
        "description": "Report an event for the job",
    },
    "ReadEvents": {
        "operationRef": "#/paths/~1jobs~1{job_id}~1events/get",
        "parameters": {"job_id": "$response.body#/id"},
        "description": "The job's events",
    },
}


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_201_CREATED: {"links": JOB_LINKS},
        status.HTTP_200_OK: {
            "model": JobPublic,
            "description": "The job already existed",
            "links": JOB_LINKS,
        },
        **error_responses(400, 404, 409, 422),
    },
)
def create_job(
    session: SessionDep, caller: Ingester, job_in: JobCreate, response: Response
) -> JobPublic:
    """Create a job (201), or answer the existing one for a repeated request (200)."""
    job, created = jobs.create_job(session, caller=caller, job_in=job_in)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobPublic.model_validate(job)


@router.get("", response_model=Page[JobPublic], responses=error_responses(422))
def read_jobs(
    session: SessionDep,
    caller: Reader,
    status_: Annotated[list[JobStatus], Query(alias="status", max_length=len(JobStatus))] = [],  # noqa: B006
    customer_id: int | None = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="provider_job_id prefix")
    ] = None,
    created_after: UtcDatetime | None = None,
    created_before: UtcDatetime | None = None,
    has_errors: bool | None = None,
    sort: JobSort = JobSort.CREATED_AT,
    order: Literal["asc", "desc"] = "desc",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[JobPublic]:
    """List jobs, newest first by default; a client sees its own customer's only."""
    items, next_cursor = jobs.list_jobs(
        session,
        caller=caller,
        filters=JobFilters(
            statuses=status_,
            customer_id=customer_id,
            tag=tag,
            q=q,
            created_after=created_after,
            created_before=created_before,
            has_errors=has_errors,
        ),
        sort=sort,
        descending=order == "desc",
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[JobPublic.model_validate(item) for item in items], next_cursor=next_cursor)


@router.get(
    "/by-provider-id/{provider_job_id:path}",
    response_model=JobDetail,
    responses=error_responses(404),
)
def read_job_by_provider_id(
    session: SessionDep, caller: Reader, provider_job_id: Annotated[str, Path(pattern=NO_NUL)]
) -> JobDetail:
    """One job by the script's own id, with the state of every step."""
    job = jobs.get_job_by_provider_id(session, caller=caller, provider_job_id=provider_job_id)
    return job_detail(session, job=job, now=datetime.now(UTC))


@router.get("/{job_id}", response_model=JobDetail, responses=error_responses(404))
def read_job(session: SessionDep, caller: Reader, job_id: int) -> JobDetail:
    """One job, with the state of every step of its configuration version."""
    job = jobs.get_job(session, caller=caller, job_id=job_id)
    return job_detail(session, job=job, now=datetime.now(UTC))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_responses(404, 409))
def cancel_job(session: SessionDep, caller: Ingester, job_id: int) -> JobPublic:
    """Cancel a job (admin, or its customer); it then refuses events with 409."""
    return JobPublic.model_validate(jobs.cancel_job(session, caller=caller, job_id=job_id))
