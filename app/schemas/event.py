from typing import Any, Literal

from pydantic import Field

from app.schemas.base import Schema


class BatchRequest(Schema):
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=1000,
        description=(
            "Up to 1,000 events, each an event (kind, name, event_id, occurred_at, message, "
            "metadata) plus exactly one of job_id or provider_job_id. Each item is checked on "
            "its own: an invalid one is rejected without stopping the others."
        ),
    )


class BatchItemResult(Schema):
    index: int = Field(description="The item's place in the request, from 0.")
    result: Literal["created", "duplicate", "rejected"]
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
