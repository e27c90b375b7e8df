"""The webhooks service: a notification is queued for each enabled endpoint of the job's
customer, and of the provider, that asked for its type, and for no other; a client manages its
own customer's endpoints only (the provider's and other customers' answer as missing ones do)."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.internal.errors import NotFound
from app.models import WebhookDelivery, WebhookEventType
from app.schemas.webhook import WebhookCreate, WebhookUpdate
from app.services import webhooks
from app.services.access import Caller
from tests.helpers.factories import (
    create_admin,
    create_configuration,
    create_customer,
    create_job,
    create_user,
)

URL = "http://127.0.0.1:9/hooks"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def endpoint(
    db: Session, caller: Caller, *types: WebhookEventType, customer_id: int | None = None
) -> int:
    webhook_in = WebhookCreate(url=URL, event_types=list(types), customer_id=customer_id)
    endpoint, _ = webhooks.create_webhook(db, caller=caller, webhook_in=webhook_in)
    return endpoint.id


def test_a_notification_goes_to_every_enabled_endpoint_that_asked_for_it(db: Session) -> None:
    admin = Caller(create_admin(db))
    customer, other = create_customer(db), create_customer(db)
    job = create_job(db, configuration=create_configuration(db), customer=customer)
    completed, failed = WebhookEventType.JOB_COMPLETED, WebhookEventType.JOB_FAILED
    wanted = {
        endpoint(db, admin, completed, customer_id=customer.id),
        endpoint(db, admin, completed, failed),  # the provider's, for every customer
    }
    endpoint(db, admin, failed, customer_id=customer.id)  # another type
    endpoint(db, admin, completed, customer_id=other.id)  # another customer
    disabled = endpoint(db, admin, completed, customer_id=customer.id)
    webhooks.update_webhook(
        db, caller=admin, webhook_id=disabled, webhook_in=WebhookUpdate(enabled=False)
    )

    assert webhooks.enqueue(db, job_ids=[job.id], event_type=completed, at=NOW) == 2
    queued = db.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).all()
    assert {delivery.endpoint_id for delivery in queued} == wanted
    assert {delivery.event_type for delivery in queued} == {completed.value}
    assert len({delivery.message_id for delivery in queued}) == 2
    assert webhooks.enqueue(db, job_ids=[], event_type=completed, at=NOW) == 0


def test_a_client_manages_its_own_customer_endpoints_only(db: Session) -> None:
    admin = Caller(create_admin(db))
    own, other = create_customer(db), create_customer(db)
    client = Caller(create_user(db, customer=own))
    mine = endpoint(db, client, WebhookEventType.JOB_FAILED)
    theirs = endpoint(db, admin, WebhookEventType.JOB_FAILED, customer_id=other.id)
    providers = endpoint(db, admin, WebhookEventType.JOB_FAILED)

    assert webhooks.get_webhook(db, caller=client, webhook_id=mine).customer_id == own.id
    listed, _ = webhooks.list_webhooks(db, caller=client, customer_id=None, limit=50, cursor=None)
    assert [each.id for each in listed] == [mine]
    for hidden in (theirs, providers):
        with pytest.raises(NotFound, match=f"Webhook {hidden} not found"):
            webhooks.get_webhook(db, caller=client, webhook_id=hidden)
        with pytest.raises(NotFound):
            webhooks.delete_webhook(db, caller=client, webhook_id=hidden)
    with pytest.raises(NotFound, match=f"Customer {other.id} not found"):
        endpoint(db, client, WebhookEventType.JOB_FAILED, customer_id=other.id)
