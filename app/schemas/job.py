import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field, StrictInt

from app.models import JobStatus
from app.schemas.base import Schema
from app.schemas.event import EventPublic
from app.schemas.fields import ProviderJobId
from app.schemas.job_configuration import Tag
from app.schemas.metadata import Metadata


class JobSort(enum.StrEnum):  # the orders of GET /jobs
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    PROGRESS = "progress"


class JobBase(Schema):
    provider_job_id: ProviderJobId = Field(description="The script's own id for the job; unique.")
    metadata: Metadata = None


class JobCreate(JobBase):
    tag: Tag = Field(description="The job configuration's tag.")
    version: StrictInt | None = Field(
        default=None, ge=1, description="Default: the latest version."
    )
    customer_id: StrictInt | None = Field(
        default=None, description="Required for admins; a client's job is for its own customer."
    )


class JobPublic(JobBase):
    id: int
    customer_id: int
    tag: str
    version: int
    configuration_id: int
    status: JobStatus
    progress: float = Field(description="completed_points / total_points, from 0 to 1.")
    completed_points: int
    total_points: int
    steps_completed: int
    step_count: int
    cost: Decimal = Field(description="Sum of the costs of the completed steps (exact).")
    event_count: int
    error_count: int
    unresolved_error_count: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    last_event_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    deadline_at: datetime | None = Field(
        description="When a pending or running job becomes stalled without another event; "
        "every event moves it. Null: no deadline applies (or the job is finished)."
    )
    metadata: dict[str, Any] | None = Field(default=None, validation_alias="metadata_")


class JobStepState(Schema):
    position: int
    tag: str
    name: str
    points: int
    cost: Decimal
    completed_at: datetime | None
    latest_unresolved_error: EventPublic | None


class JobDetail(JobPublic):
    steps: list[JobStepState]
    latest_unresolved_job_error: EventPublic | None = Field(
        description="The latest unresolved error that names no step."
    )
    eta: datetime | None = Field(
        description="Expected completion: now plus the median recorded durations of the "
        "remaining steps in this configuration version's history. Null when a remaining step "
        "has too little history, or the job is completed, failed or cancelled."
    )
    eta_p90: datetime | None = Field(
        description="An upper bound of the completion time: now plus the remaining steps' "
        "90th percentiles."
    )


class EventResult(Schema):
    """The answer to an event: the event, and the job as the event left it."""

    event: EventPublic
    job: JobPublic
