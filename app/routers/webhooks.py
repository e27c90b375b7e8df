from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.dependencies import CurrentUser, Cursor, Limit, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.schemas.error import error_responses
from app.schemas.page import Page
from app.schemas.webhook import (
    WebhookAttemptPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookNotification,
    WebhookPublic,
    WebhookUpdate,
)
from app.services import webhooks

# 403: an API key, whatever its scopes (webhooks are managed with a session or a bearer token).
router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=error_responses(401, 403))
# What the API sends, for the OpenAPI document's `webhooks` (nothing is served here).
notifications = APIRouter(tags=["webhooks"])


@notifications.post("job-notification", status_code=status.HTTP_204_NO_CONTENT)
def job_notification(notification: WebhookNotification) -> None:
    """POSTed to each endpoint for the event types it asked for, signed as Standard Webhooks
    says (headers `webhook-id`, the same on every attempt: dedupe by it; `webhook-timestamp`;
    `webhook-signature`, space-separated signatures, two during a secret's rotation: accept
    the message when one verifies). Answer any 2xx within the deadline (the whole exchange, 5 s
    by default); anything else, redirects included, is retried."""


def _delivery(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic.model_validate(
        {
            **{
                name: getattr(delivery, name)
                for name in WebhookDeliveryPublic.model_fields
                if name != "attempts"
            },
            "attempts": [WebhookAttemptPublic.model_validate(attempt) for attempt in attempts],
        }
    )


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 422),
)
def create_webhook(
    session: SessionDep, caller: CurrentUser, webhook_in: WebhookCreate
) -> WebhookCreated:
    """Register an endpoint. The answer holds its signing secret: it is shown only once."""
    endpoint, secret = webhooks.create_webhook(session, caller=caller, webhook_in=webhook_in)
    return _with_secret(endpoint, secret)


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> WebhookCreated:
    return WebhookCreated(**WebhookPublic.model_validate(endpoint).model_dump(), secret=secret)


@router.get("", response_model=Page[WebhookPublic], responses=error_responses(422))
def read_webhooks(
    session: SessionDep,
    caller: CurrentUser,
    customer_id: int | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[WebhookPublic]:
    """The endpoints you may manage: an admin's are all of them, a client's its customer's."""
    items, next_cursor = webhooks.list_webhooks(
        session, caller=caller, customer_id=customer_id, limit=limit, cursor=cursor
    )
    return Page(
        items=[WebhookPublic.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=error_responses(404))
def read_webhook(session: SessionDep, caller: CurrentUser, webhook_id: int) -> WebhookPublic:
    """One endpoint; `disabled_at` and `disabled_reason` say if delivery gave up on it."""
    return WebhookPublic.model_validate(
        webhooks.get_webhook(session, caller=caller, webhook_id=webhook_id)
    )


@router.patch(
    "/{webhook_id}", response_model=WebhookPublic, responses=error_responses(400, 404, 422)
)
def update_webhook(
    session: SessionDep, caller: CurrentUser, webhook_id: int, webhook_in: WebhookUpdate
) -> WebhookPublic:
    """Change an endpoint's URL, event types or description; pause it, or enable it again."""
    endpoint = webhooks.update_webhook(
        session, caller=caller, webhook_id=webhook_id, webhook_in=webhook_in
    )
    return WebhookPublic.model_validate(endpoint)


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404)
)
def delete_webhook(session: SessionDep, caller: CurrentUser, webhook_id: int) -> None:
    """Remove an endpoint and its delivery log; nothing more is sent to it."""
    webhooks.delete_webhook(session, caller=caller, webhook_id=webhook_id)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookCreated,
    responses=error_responses(404, 409),
)
def rotate_secret(session: SessionDep, caller: CurrentUser, webhook_id: int) -> WebhookCreated:
    """Give an endpoint a new signing secret, shown only in this answer. Until
    `previous_secret_expires_at` deliveries carry signatures under the new and the old secret."""
    endpoint, secret = webhooks.rotate_secret(
        session, caller=caller, webhook_id=webhook_id, now=datetime.now(UTC)
    )
    return _with_secret(endpoint, secret)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[WebhookDeliveryPublic],
    responses=error_responses(404, 422),
)
def read_deliveries(
    session: SessionDep,
    caller: CurrentUser,
    webhook_id: int,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[WebhookDeliveryPublic]:
    """The endpoint's deliveries, newest first: status, attempts with their answers, next try."""
    items, next_cursor = webhooks.list_deliveries(
        session,
        caller=caller,
        webhook_id=webhook_id,
        status=status_,
        limit=limit,
        cursor=cursor,
    )
    return Page(
        items=[_delivery(delivery, attempts) for delivery, attempts in items],
        next_cursor=next_cursor,
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=WebhookDeliveryPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404),
)
def redeliver(
    session: SessionDep, caller: CurrentUser, webhook_id: int, delivery_id: int
) -> WebhookDeliveryPublic:
    """Send a delivery again (same webhook-id and body) at the worker's next run."""
    delivery, attempts = webhooks.redeliver(
        session, caller=caller, webhook_id=webhook_id, delivery_id=delivery_id
    )
    return _delivery(delivery, attempts)
