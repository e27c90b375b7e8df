"""Webhook endpoints: registration (a signing secret shown once), reads, changes, removal, the
delivery log and redelivery; and `enqueue`, which writes notifications to the outbox in the
caller's transaction (the database function `enqueue_webhooks`, which `apply_events` uses too).

An endpoint belongs to one customer, or (customer_id None) to the provider for every customer.
Admins manage all of them; a client manages its own customer's only.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import BigInteger

from app.internal import destinations
from app.internal.errors import InvalidInput, NotFound
from app.internal.pagination import keyset_page
from app.internal.webhook_signing import generate_secret
from app.models import (
    Customer,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from app.schemas.webhook import WebhookCreate, WebhookUpdate
from app.services.access import Caller
from config import config


def enqueue(
    session: Session, *, job_ids: Sequence[int], event_type: WebhookEventType, at: datetime
) -> int:
    """Queue a notification of `event_type` for each job and each enabled endpoint that asked
    for it; answer how many. Committed with the caller's change, or rolled back with it."""
    if not job_ids:
        return 0
    queued = session.scalar(
        select(
            func.enqueue_webhooks(
                bindparam("job_ids", list(job_ids), type_=ARRAY(BigInteger)),
                event_type.value,
                at,
            )
        )
    )
    return queued or 0


def check_destination(url: str) -> None:
    settings = config.settings
    destinations.check_destination(
        url,
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private_addresses,
    )


def _customer_for_endpoint(session: Session, caller: Caller, customer_id: int | None) -> int | None:
    if not caller.is_admin:
        own = caller.user.customer_id
        if customer_id is not None and customer_id != own:
            raise NotFound(f"Customer {customer_id} not found")
        return own
    if customer_id is not None and session.get(Customer, customer_id) is None:
        raise NotFound(f"Customer {customer_id} not found")
    return customer_id


def create_webhook(
    session: Session, *, caller: Caller, webhook_in: WebhookCreate
) -> WebhookEndpoint:
    customer_id = _customer_for_endpoint(session, caller, webhook_in.customer_id)
    check_destination(webhook_in.url)
    endpoint = WebhookEndpoint(
        customer_id=customer_id,
        url=webhook_in.url,
        description=webhook_in.description,
        event_types=[event_type.value for event_type in webhook_in.event_types],
        secret=generate_secret(),
    )
    session.add(endpoint)
    session.flush()
    session.refresh(endpoint)
    return endpoint


def _visible(caller: Caller) -> ColumnElement[bool]:
    """An admin sees every endpoint; a client its own customer's (not the provider's)."""
    if caller.is_admin:
        return true()
    return WebhookEndpoint.customer_id == caller.user.customer_id


def get_webhook(session: Session, *, caller: Caller, webhook_id: int) -> WebhookEndpoint:
    endpoint = session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id, _visible(caller))
    )
    if endpoint is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return endpoint


def list_webhooks(
    session: Session,
    *,
    caller: Caller,
    customer_id: int | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[WebhookEndpoint], str | None]:
    statement = select(WebhookEndpoint).where(_visible(caller))
    if customer_id is not None:
        statement = statement.where(WebhookEndpoint.customer_id == customer_id)
    return keyset_page(
        session, statement, order_by=[WebhookEndpoint.id], limit=limit, cursor=cursor
    )


def update_webhook(
    session: Session, *, caller: Caller, webhook_id: int, webhook_in: WebhookUpdate
) -> WebhookEndpoint:
    endpoint = get_webhook(session, caller=caller, webhook_id=webhook_id)
    changes = webhook_in.model_dump(exclude_unset=True)
    for name in ("url", "event_types"):
        if name in changes and changes[name] is None:
            raise InvalidInput(f"{name} cannot be null")
    if webhook_in.url is not None:
        check_destination(webhook_in.url)
        endpoint.url = webhook_in.url
    if webhook_in.event_types is not None:
        endpoint.event_types = [event_type.value for event_type in webhook_in.event_types]
    if "description" in changes:
        endpoint.description = webhook_in.description
    if webhook_in.enabled is not None:
        endpoint.enabled = webhook_in.enabled
        if webhook_in.enabled:
            # A fresh start: it is disabled again only after failing for the whole window.
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    session.flush()
    session.refresh(endpoint)
    return endpoint


def delete_webhook(session: Session, *, caller: Caller, webhook_id: int) -> None:
    session.delete(get_webhook(session, caller=caller, webhook_id=webhook_id))
    session.flush()


def list_deliveries(
    session: Session,
    *,
    caller: Caller,
    webhook_id: int,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[WebhookDelivery, list[WebhookAttempt]]], str | None]:
    """The endpoint's deliveries, newest first, each with its attempts (two queries a page)."""
    get_webhook(session, caller=caller, webhook_id=webhook_id)
    statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == webhook_id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    deliveries, next_cursor = keyset_page(
        session,
        statement,
        order_by=[WebhookDelivery.id],
        descending=True,
        limit=limit,
        cursor=cursor,
    )
    attempts: dict[int, list[WebhookAttempt]] = defaultdict(list)
    for attempt in session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_([delivery.id for delivery in deliveries]))
        .order_by(WebhookAttempt.id)
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [(delivery, attempts[delivery.id]) for delivery in deliveries], next_cursor


def redeliver(
    session: Session, *, caller: Caller, webhook_id: int, delivery_id: int
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """Send a delivery again at the next run of the worker, whatever became of it: its
    message id and body stay the same, so a receiver that had it sees a duplicate."""
    endpoint = get_webhook(session, caller=caller, webhook_id=webhook_id)
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id)
        .with_for_update()
    )
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} of webhook {webhook_id} not found")
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = datetime.now(UTC)
    # A new round of retries: the attempts of the earlier ones stay in the log.
    delivery.attempt_count = 0
    session.flush()
    attempts = list(
        session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.id)
        )
    )
    return delivery, attempts
