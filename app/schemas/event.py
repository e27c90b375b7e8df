"""Events as scripts send them, one at a time or in batches, and as the API answers them."""

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictInt, model_validator

from app.models import EventKind, Job
from app.schemas.base import Schema
from app.schemas.fields import NO_NUL, AwareUtcDatetime, ProviderJobId
from app.schemas.metadata import Metadata
from app.schemas.page import Page

# Events per POST /events/batch.
MAX_BATCH_EVENTS = 1000


class EventCreate(Schema):
    # What the validator below enforces, stated in the schema for clients generated from it.
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


class BatchEventIn(EventCreate):
    """One event of a batch: its job by `job_id` or by `provider_job_id` (exactly one)."""

    job_id: StrictInt | None = None
    provider_job_id: ProviderJobId | None = None

    @model_validator(mode="after")
    def _one_job_reference(self) -> "BatchEventIn":
        if (self.job_id is None) == (self.provider_job_id is None):
            raise ValueError("give exactly one of job_id and provider_job_id")
        return self


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


class EventsPruned(Schema):
    """A job's older events deleted by the retention policy (EVENT_RETENTION_DAYS)."""

    count: int = Field(
        description="How many of the job's events were deleted; its event_count still counts them."
    )
    before: datetime = Field(
        description="Every deleted event was received before this time. Unresolved errors are "
        "never deleted, so the list may hold older ones."
    )

    @classmethod
    def of(cls, job: Job) -> "EventsPruned | None":
        if job.events_pruned_before is None:
            return None
        return cls(count=job.events_pruned_count, before=job.events_pruned_before)


class EventPage(Page[EventPublic]):
    """One page of a job's events (pass `next_cursor` as `cursor` for the next; null on the
    last), and what the retention policy deleted of them."""

    pruned: EventsPruned | None = Field(
        description="What the retention policy deleted of this job's events; null: none."
    )


class BatchRequest(Schema):
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description=(
            f"Up to {MAX_BATCH_EVENTS:,} events, each an event (kind, name, event_id, "
            "occurred_at, message, metadata) plus exactly one of job_id or provider_job_id. Each "
            "item is checked on its own: an invalid one is rejected without stopping the others."
        ),
    )


BatchItemOutcome = Literal["created", "duplicate", "rejected"]


class BatchItemResult(Schema):
    index: int = Field(description="The item's place in the request, from 0.")
    result: BatchItemOutcome
    job_id: int | None
    event_id: int | None = Field(
        description="The stored event's id (the new one, or the original of a duplicate)."
    )
    reason: str | None = Field(description="Why the item was rejected.")


class BatchResult(Schema):
    created: int
    duplicate: int
    rejected: int
    results: list[BatchItemResult]
