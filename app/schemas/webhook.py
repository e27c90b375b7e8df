from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StringConstraints

from app.models import DeliveryStatus, WebhookEventType
from app.schemas.base import Schema
from app.schemas.fields import NO_NUL
from app.schemas.job import JobDetail


def _unique(event_types: list[WebhookEventType]) -> list[WebhookEventType]:
    return list(dict.fromkeys(event_types))


WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=NO_NUL),
    Field(description="Where notifications are POSTed: an https URL."),
]
EventTypes = Annotated[
    list[WebhookEventType],
    Field(min_length=1, max_length=len(WebhookEventType), description="What to be told of."),
    AfterValidator(_unique),
]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200, pattern=NO_NUL)
]


class WebhookBase(Schema):
    url: WebhookUrl
    event_types: EventTypes
    description: Description | None = None


class WebhookCreate(WebhookBase):
    customer_id: StrictInt | None = Field(
        default=None,
        description="The customer whose jobs it hears of. A client's endpoint is for its own "
        "customer; an admin's, without one, for every customer.",
    )


class WebhookUpdate(Schema):
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: StrictBool | None = Field(
        default=None, description="false stops deliveries (none queued meanwhile); true resumes it."
    )


class WebhookPublic(WebhookBase):
    id: int
    customer_id: int | None
    enabled: bool
    disabled_at: datetime | None = Field(
        description="When delivery disabled the endpoint, after it failed for too long."
    )
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="The first failure since the last success.")
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then deliveries are signed with the old secret too."
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The signing secret (Standard Webhooks `whsec_...`); shown only once."
    )


class WebhookAttemptPublic(Schema):
    attempted_at: datetime
    status_code: int | None = Field(description="What the endpoint answered; null: no answer.")
    error: str | None
    duration_ms: int


class WebhookDeliveryPublic(Schema):
    id: int
    message_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: WebhookEventType
    job_id: int
    status: DeliveryStatus
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="The next try, while pending.")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[WebhookAttemptPublic]


class WebhookNotification(Schema):
    """The body of every notification; receivers verify its signature before parsing it."""

    type: WebhookEventType
    timestamp: datetime = Field(description="When the change happened.")
    data: JobDetail = Field(description="The job as GET /jobs/{id} showed it when first sent.")
