import enum
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StrictInt, StringConstraints, model_validator

from app.models import EventKind, JobStatus
from app.schemas.base import Schema
from app.schemas.fields import NO_NUL, AwareUtcDatetime
from app.schemas.job_configuration import Tag
from app.schemas.metadata import Metadata

# Printable ASCII without spaces: safe in URLs, logs and spreadsheets.
ProviderJobId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]


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
    metadata: dict[str, Any] | None = Field(default=None, validation_alias="metadata_")


class EventPublic(Schema):
    id: int
    job_id: int
    kind: EventKind
    name: str | None = Field(validation_alias="step_tag")
    event_id: str | None
    message: str | None
    metadata: dict[str, Any] | None = Field(validation_alias="metadata_")
    occurred_at: datetime | None
    received_at: datetime
    resolved_at: datetime | None


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


class EventCreate(Schema):
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"kind": {"const": EventKind.STEP.value}}, "required": ["kind"]},
            "then": {"properties": {"name": {"type": "string"}}, "required": ["name"]},
        }
    )

    kind: EventKind
    name: str | None = Field(
        default=None,
        max_length=64,
        pattern=NO_NUL,
        description="A step tag of the job's configuration: required for step events.",
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Your idempotency key: the same event_id for the same job is stored once.",
    )
    occurred_at: AwareUtcDatetime | None = Field(
        default=None, description="When it happened, by your clock (timezone required)."
    )
    message: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    metadata: Metadata = None

    @model_validator(mode="after")
    def _step_names_its_step(self) -> "EventCreate":
        if self.kind == EventKind.STEP and self.name is None:
            raise ValueError("name is required for step events: the tag of the step completed")
        return self


class EventResult(Schema):
    event: EventPublic
    job: JobPublic
