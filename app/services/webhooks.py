"""Webhook endpoints: registration (a signing secret shown once, stored encrypted), reads,
changes, removal, secret rotation, the delivery log and redelivery; and `enqueue`, which writes
notifications to the outbox in the caller's transaction (the database function
`enqueue_webhooks`, which `apply_events` uses too).

An endpoint belongs to one customer, or (customer_id None) to the provider for every customer.
Admins manage all of them; a client manages its own customer's only.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import BigInteger

from app.internal import destinations
from app.internal.destinations import Resolver, system_resolver
from app.internal.errors import Conflict, InvalidInput, NotFound
from app.internal.pagination import keyset_page
from app.internal.secret_box import SecretBox, UnreadableSecret, secret_box
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
from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.webhooks")


# The endpoints the worker sends for (its claim); the system status judges the backlog by the
# same rule. A secret stored in plain text (by the release before encryption) waits for
# auth_cleanup to encrypt it.
SENDABLE = and_(WebhookEndpoint.enabled, WebhookEndpoint.secret_encrypted.is_not(None))


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


def check_destination(url: str, *, resolve: Resolver = system_resolver) -> None:
    settings = config.settings
    destinations.check_destination(
        url,
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private_addresses,
        allowed_ports=settings.webhook_allowed_ports,
        resolve=resolve,
    )


def configured_secret_box() -> SecretBox:
    keys = tuple(key.get_secret_value() for key in config.settings.webhook_secret_keys)
    return secret_box(keys)


def signing_secrets(endpoint: WebhookEndpoint, *, now: datetime) -> list[str]:
    """The secrets that sign the endpoint's deliveries now: its secret, and during a rotation's
    overlap the one it replaced. Raises UnreadableSecret when its secret does not decrypt; a
    replaced one that does not is left out (logged): the current one signs all the same."""
    assert endpoint.secret_encrypted is not None  # the worker claims no other endpoint's
    box = configured_secret_box()
    secrets = [box.decrypt(endpoint.secret_encrypted)]
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted is not None and expires_at and now < expires_at:
        try:
            secrets.append(box.decrypt(endpoint.previous_secret_encrypted))
        except UnreadableSecret:
            logger.warning(
                "Webhook %s: its replaced signing secret decrypts under no key; signing with "
                "its current one only",
                endpoint.id,
            )
    return secrets


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
    session: Session,
    *,
    caller: Caller,
    webhook_in: WebhookCreate,
    resolve: Resolver = system_resolver,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; answer it and its signing secret, which only this answer holds
    in plain text."""
    customer_id = _customer_for_endpoint(session, caller, webhook_in.customer_id)
    check_destination(webhook_in.url, resolve=resolve)
    secret = generate_secret()
    endpoint = WebhookEndpoint(
        customer_id=customer_id,
        url=webhook_in.url,
        description=webhook_in.description,
        event_types=[event_type.value for event_type in webhook_in.event_types],
        secret_encrypted=configured_secret_box().encrypt(secret),
    )
    session.add(endpoint)
    session.flush()
    session.refresh(endpoint)
    return endpoint, secret


def rotate_secret(
    session: Session, *, caller: Caller, webhook_id: int, now: datetime
) -> tuple[WebhookEndpoint, str]:
    """Give the endpoint a new signing secret; answer it and the secret (shown only in this
    answer). The secret it replaces signs deliveries too for the overlap, so a receiver can
    switch without missing one; a secret replaced before is forgotten at once."""
    endpoint = get_webhook(session, caller=caller, webhook_id=webhook_id, for_update=True)
    if endpoint.secret_encrypted is None:
        raise Conflict(
            f"Webhook {webhook_id}'s secret is being encrypted: rotate it after the next "
            "auth_cleanup run (every 5 minutes)"
        )
    secret = generate_secret()
    overlap = timedelta(hours=config.settings.webhook_secret_overlap_hours)
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted if overlap else None
    endpoint.previous_secret_expires_at = now + overlap if overlap else None
    endpoint.secret_encrypted = configured_secret_box().encrypt(secret)
    session.flush()
    session.refresh(endpoint)
    return endpoint, secret


def encrypt_plain_secrets(session: Session, *, limit: int) -> int:
    """Encrypt up to `limit` secrets stored in plain text (by a release from before encryption,
    still serving during a deploy) under the first key; answer how many. Reads only the
    partial index of such endpoints, so it is cheap enough for a schedule."""
    box = configured_secret_box()
    endpoints = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.unencrypted_secret.is_not(None))
        .order_by(WebhookEndpoint.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for endpoint in endpoints:
        _encrypt_plain(endpoint, box)
    session.flush()
    return len(endpoints)


class Reencrypted(NamedTuple):
    changed: int
    # The last endpoint seen: the next batch starts after it.
    last_id: int


def reencrypt_secrets(
    session: Session, *, now: datetime, limit: int, after_id: int = 0
) -> Reencrypted:
    """Encrypt up to `limit` endpoints' secrets that are not under the first key of
    WEBHOOK_SECRET_KEYS (or not encrypted at all) under it, and forget replaced secrets whose
    overlap ended; answer how many endpoints changed, and the last one seen. Endpoints are
    taken in id order after `after_id` (the last one the batch before saw), so a run reads
    each once and ends however many there are."""
    box = configured_secret_box()
    changed = 0
    last_id = after_id
    while changed < limit:
        endpoints = session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id > last_id)
            .order_by(WebhookEndpoint.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not endpoints:
            break
        for endpoint in endpoints:
            last_id = endpoint.id
            try:
                if not _reencrypt(endpoint, box, now=now):
                    continue
            except UnreadableSecret:
                # Its key was dropped too soon; its deliveries fail and say so. The others go on.
                logger.warning("Webhook %s: its signing secret decrypts under no key", endpoint.id)
                continue
            changed += 1
            if changed == limit:
                break
    session.flush()
    return Reencrypted(changed, last_id)


def _encrypt_plain(endpoint: WebhookEndpoint, box: SecretBox) -> None:
    assert endpoint.unencrypted_secret is not None
    endpoint.secret_encrypted = box.encrypt(endpoint.unencrypted_secret)
    endpoint.unencrypted_secret = None


def _reencrypt(endpoint: WebhookEndpoint, box: SecretBox, *, now: datetime) -> bool:
    changed = False
    if endpoint.unencrypted_secret is not None:
        _encrypt_plain(endpoint, box)
        changed = True
    elif endpoint.secret_encrypted is not None and not box.under_first_key(
        endpoint.secret_encrypted
    ):
        endpoint.secret_encrypted = box.encrypt(box.decrypt(endpoint.secret_encrypted))
        changed = True
    previous = endpoint.previous_secret_encrypted
    expires_at = endpoint.previous_secret_expires_at
    if previous is not None and (expires_at is None or expires_at <= now):
        endpoint.previous_secret_encrypted = endpoint.previous_secret_expires_at = None
        changed = True
    elif previous is not None and not box.under_first_key(previous):
        endpoint.previous_secret_encrypted = box.encrypt(box.decrypt(previous))
        changed = True
    return changed


def _visible(caller: Caller) -> ColumnElement[bool]:
    """An admin sees every endpoint; a client its own customer's (not the provider's)."""
    if caller.is_admin:
        return true()
    return WebhookEndpoint.customer_id == caller.user.customer_id


def get_webhook(
    session: Session, *, caller: Caller, webhook_id: int, for_update: bool = False
) -> WebhookEndpoint:
    statement = select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id, _visible(caller))
    endpoint = session.scalar(statement.with_for_update() if for_update else statement)
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
    # Due at once; but while a worker holds it (leased_until), no other claim takes it before
    # that send is recorded, so it is never sent twice at the same time.
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
