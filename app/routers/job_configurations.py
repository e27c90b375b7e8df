from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from app.dependencies import Configurer, Cursor, Limit, Reader, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.models import JobConfiguration
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL
from app.schemas.job_configuration import (
    JobConfigurationCreate,
    JobConfigurationFile,
    JobConfigurationPublic,
    JobConfigurationUpserted,
    file_json_schema,
)
from app.schemas.page import Page
from app.services import job_configurations

# Any text but NUL (which PostgreSQL refuses): a tag no configuration has is not found.
TagPath = Annotated[str, Path(pattern=NO_NUL)]

router = APIRouter(
    prefix="/job-configurations", tags=["job configurations"], responses=error_responses(401, 403)
)

# OpenAPI links: what a client can do next with the version it created (or found).
CONFIGURATION_LINKS = {
    "ReadJobConfiguration": {
        "operationRef": "#/paths/~1job-configurations~1{tag}/get",
        "parameters": {"tag": "$response.body#/tag", "version": "$response.body#/version"},
        "description": "This version of the configuration",
    },
    "CreateJob": {
        "operationRef": "#/paths/~1jobs/post",
        "requestBody": {"tag": "$response.body#/tag", "version": "$response.body#/version"},
        "description": "Create a job pinned to this version (the other fields are yours)",
    },
}


def _page(items: list[JobConfiguration], next_cursor: str | None) -> Page[JobConfigurationPublic]:
    return Page(
        items=[JobConfigurationPublic.model_validate(item) for item in items],
        next_cursor=next_cursor,
    )


@router.post(
    "",
    response_model=JobConfigurationPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_201_CREATED: {"links": CONFIGURATION_LINKS},
        status.HTTP_200_OK: {
            "model": JobConfigurationPublic,
            "description": "Unchanged: the current version",
            "links": CONFIGURATION_LINKS,
        },
        **error_responses(400, 409),
    },
)
def create_job_configuration(
    session: SessionDep, caller: Configurer, response: Response, config_in: JobConfigurationCreate
) -> JobConfigurationPublic:
    """Create a configuration, or its next version if the content changed (admin)."""
    configuration, created = job_configurations.create_configuration(session, config_in=config_in)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobConfigurationPublic.model_validate(configuration)


@router.put("", response_model=list[JobConfigurationUpserted], responses=error_responses(400, 409))
def upsert_job_configurations(
    session: SessionDep, caller: Configurer, file_in: JobConfigurationFile
) -> list[JobConfigurationUpserted]:
    """Create or version every configuration of a file, all or nothing (admin)."""
    outcomes = job_configurations.upsert_configurations(
        session, configs_in=file_in.configurations()
    )
    return [JobConfigurationUpserted.model_validate(outcome) for outcome in outcomes]


@router.get("", response_model=Page[JobConfigurationPublic], responses=error_responses(422))
def read_job_configurations(
    session: SessionDep, caller: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[JobConfigurationPublic]:
    """List the latest version of every configuration, by tag."""
    return _page(*job_configurations.list_latest(session, limit=limit, cursor=cursor))


@router.get("/schema", response_model=dict[str, Any])
def read_job_configuration_file_schema(caller: Reader) -> dict[str, Any]:
    """The JSON Schema of the file that PUT /job-configurations takes."""
    return file_json_schema()


@router.get("/{tag}", response_model=JobConfigurationPublic, responses=error_responses(404))
def read_job_configuration(
    session: SessionDep,
    caller: Reader,
    tag: TagPath,
    version: int | None = Query(default=None, ge=1, description="Default: the latest"),
) -> JobConfigurationPublic:
    """One version of a configuration, the latest by default."""
    configuration = job_configurations.get_configuration(session, tag=tag, version=version)
    return JobConfigurationPublic.model_validate(configuration)


@router.get(
    "/{tag}/versions",
    response_model=Page[JobConfigurationPublic],
    responses=error_responses(404, 422),
)
def read_job_configuration_versions(
    session: SessionDep,
    caller: Reader,
    tag: TagPath,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[JobConfigurationPublic]:
    """Every version of a configuration, newest first."""
    return _page(*job_configurations.list_versions(session, tag=tag, limit=limit, cursor=cursor))
