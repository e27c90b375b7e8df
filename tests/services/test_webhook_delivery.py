"""Webhook delivery against a real HTTP receiver: signed as Standard Webhooks says, retried with
backoff while the receiver fails or is down, the same message every time; endpoints that keep
failing are disabled; two workers never send the same attempt; the outbox is transactional."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import (
    Customer,
    DeliveryStatus,
    EventKind,
    Job,
    JobConfiguration,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.schemas.webhook import WebhookCreate
from app.services import job_contract, webhook_delivery, webhooks
from app.services.access import Caller
from app.services.jobs import create_job
from app.services.webhook_delivery import DeliveryPolicy
from config import config
from tests.helpers.factories import create_admin, create_configuration, create_customer, unique
from tests.helpers.webhook_receiver import Receiver

STEPS = (("a", 1, Decimal("1")), ("b", 1, Decimal("2")))
POLICY = DeliveryPolicy(
    timeout_seconds=5,
    base_delay_seconds=30,
    max_delay_seconds=3600,
    retry_window=timedelta(hours=72),
    disable_after=timedelta(hours=120),
    allow_private_addresses=True,
    allow_http=True,
    allowed_ports=None,
    jitter=0,  # waits as the rule says, to the second; the jitter has a test of its own
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def sessions(db: Session) -> sessionmaker[Session]:
    """Sessions for the worker, inside the test's transaction (rolled back after it)."""
    return sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")


def register(
    db: Session, url: str, customer: Customer | None = None
) -> tuple[WebhookEndpoint, str]:
    """The endpoint and its signing secret."""
    return webhooks.create_webhook(
        db,
        caller=Caller(user=create_admin(db)),
        webhook_in=WebhookCreate(
            url=url,
            event_types=list(WebhookEventType),
            customer_id=customer.id if customer else None,
        ),
    )


def completed_job(db: Session, configuration: JobConfiguration, customer: Customer) -> Job:
    job, _ = create_job(
        db,
        caller=Caller(user=create_admin(db)),
        job_in=JobCreate(
            provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
        ),
    )
    job_contract.apply_events(
        db,
        [
            job_contract.EventToApply(EventCreate(kind=EventKind.STEP, name=tag), job_id=job.id)
            for tag in ("a", "b")
        ],
        visible_customer_id=None,
    )
    return job


def deliver(
    sessions: sessionmaker[Session], now: datetime, policy: DeliveryPolicy = POLICY
) -> dict[str, int]:
    return webhook_delivery.deliver_due(sessions, now=now, max_claims=10, policy=policy)


def the_delivery(db: Session) -> WebhookDelivery:
    db.expire_all()
    [delivery] = db.scalars(select(WebhookDelivery)).all()
    return delivery


def attempt_codes(db: Session, delivery: WebhookDelivery) -> list[int | None]:
    return list(
        db.scalars(
            select(WebhookAttempt.status_code)
            .where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.id)
        )
    )


def test_a_failing_receiver_gets_three_signed_attempts_of_one_notification(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    _, secret = register(db, receiver.url, customer)
    job = completed_job(db, create_configuration(db, steps=STEPS), customer)
    receiver.answers.extend([500, 503])
    now = datetime.now(UTC)

    assert deliver(sessions, now) == {"delivered": 0, "failed": 1}
    assert the_delivery(db).next_attempt_at == now + timedelta(seconds=30)
    assert deliver(sessions, now + timedelta(seconds=29)) == {"delivered": 0, "failed": 0}
    assert deliver(sessions, now + timedelta(seconds=30)) == {"delivered": 0, "failed": 1}
    assert the_delivery(db).next_attempt_at == now + timedelta(seconds=90)
    assert deliver(sessions, now + timedelta(seconds=90)) == {"delivered": 1, "failed": 0}
    assert deliver(sessions, now + timedelta(days=1)) == {"delivered": 0, "failed": 0}

    assert len(receiver.requests) == 3
    assert all(request.signed_by(secret) for request in receiver.requests)
    assert not receiver.requests[0].signed_by("whsec_" + "A" * 44)
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    assert len({request.body for request in receiver.requests}) == 1
    body = receiver.requests[0].json
    assert body["type"] == "job.completed"
    assert body["data"]["id"] == job.id
    assert body["data"]["status"] == "completed"
    assert [step["tag"] for step in body["data"]["steps"]] == ["a", "b"]
    assert "eta" in body["data"]

    delivery = the_delivery(db)
    assert delivery.message_id == receiver.requests[0].headers["webhook-id"]
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.DELIVERED, 3)
    assert attempt_codes(db, delivery) == [500, 503, 200]


def test_retries_continue_while_the_receiver_is_down_then_succeed(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    endpoint, secret = register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    receiver.stop()
    now = datetime.now(UTC)
    waits = [0, 30, 60, 120, 240]  # each wait doubles
    for wait in waits:
        now += timedelta(seconds=wait)
        assert deliver(sessions, now) == {"delivered": 0, "failed": 1}
    delivery = the_delivery(db)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at == now + timedelta(seconds=480)
    assert delivery.last_status_code is None
    assert delivery.last_error is not None
    assert "Connect" in delivery.last_error
    db.refresh(endpoint)
    assert endpoint.failing_since is not None
    assert endpoint.enabled

    receiver.start()
    assert deliver(sessions, now + timedelta(seconds=480)) == {"delivered": 1, "failed": 0}
    assert attempt_codes(db, the_delivery(db)) == [None] * len(waits) + [200]
    assert len(receiver.requests) == 1
    assert receiver.requests[0].signed_by(secret)
    db.refresh(endpoint)
    assert endpoint.failing_since is None


def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_not_tried_again(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    endpoint, _ = register(db, receiver.url, customer)
    configuration = create_configuration(db, steps=STEPS)
    completed_job(db, configuration, customer)
    receiver.answers.extend([500] * 10)
    policy = DeliveryPolicy(**{**POLICY.__dict__, "disable_after": timedelta(hours=1)})
    now = datetime.now(UTC)
    deliver(sessions, now, policy)
    deliver(sessions, now + timedelta(minutes=30), policy)
    db.refresh(endpoint)
    assert endpoint.enabled
    deliver(sessions, now + timedelta(hours=2), policy)
    db.refresh(endpoint)
    assert not endpoint.enabled
    assert endpoint.disabled_at == now + timedelta(hours=2)
    assert endpoint.disabled_reason is not None
    assert "HTTP 500" in endpoint.disabled_reason
    # Its deliveries wait: nothing is sent to a disabled endpoint.
    completed_job(db, configuration, customer)
    assert deliver(sessions, now + timedelta(days=1), policy) == {"delivered": 0, "failed": 0}
    assert len(receiver.requests) == 3


def test_a_delivery_gives_up_once_its_retries_span_the_retry_window(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    receiver.answers.extend([500] * 10)
    # Waits 30, 60 then 90 s (the maximum): past 2 minutes after the fourth failure.
    policy = DeliveryPolicy(
        **{**POLICY.__dict__, "max_delay_seconds": 90, "retry_window": timedelta(minutes=2)}
    )
    now = datetime.now(UTC)
    for wait in [0, 30, 60, 90]:
        now += timedelta(seconds=wait)
        deliver(sessions, now, policy)
    delivery = the_delivery(db)
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == (
        DeliveryStatus.FAILED,
        4,
        None,
    )


def test_the_default_retries_last_more_than_a_day() -> None:
    policy = DeliveryPolicy.from_settings()
    failures = 1
    while policy.retries_after(failures):
        failures += 1
    spanned = sum((policy.delay(n) for n in range(1, failures)), timedelta())
    assert spanned >= timedelta(hours=24)
    assert policy.delay(1) < policy.delay(2) < policy.delay(3)


def test_private_destinations_are_refused_at_delivery_when_not_allowed(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    policy = DeliveryPolicy(**{**POLICY.__dict__, "allow_private_addresses": False})
    assert deliver(sessions, datetime.now(UTC), policy) == {"delivered": 0, "failed": 1}
    assert receiver.requests == []
    delivery = the_delivery(db)
    assert delivery.last_error is not None
    assert "127.0.0.1, which is not a public address" in delivery.last_error


@pytest.mark.usefixtures("committed")
def test_two_workers_never_claim_the_same_delivery() -> None:
    with config.database.SessionLocal() as session:
        customer = create_customer(session)
        register(session, "https://hooks.example/a", customer)
        configuration = create_configuration(session, steps=STEPS)
        for _ in range(30):
            completed_job(session, configuration, customer)
        session.commit()
    now = datetime.now(UTC)
    with config.database.SessionLocal() as first, config.database.SessionLocal() as second:
        mine = webhook_delivery.claim(first, now=now, policy=POLICY)
        theirs = webhook_delivery.claim(second, now=now, policy=POLICY)
        first.commit()
        second.commit()
    assert len(mine) == webhook_delivery.CLAIM_SIZE
    assert len(theirs) == 30 - webhook_delivery.CLAIM_SIZE
    assert not set(mine) & set(theirs)
    with config.database.SessionLocal() as third:
        assert webhook_delivery.claim(third, now=now, policy=POLICY) == []  # leased


def outbox_rows() -> int:
    with config.database.SessionLocal() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0


@pytest.mark.usefixtures("committed")
def test_a_rolled_back_change_leaves_no_notification_and_a_committed_one_is_kept() -> None:
    with config.database.SessionLocal() as session:
        customer = create_customer(session)
        register(session, "https://hooks.example/a", customer)
        configuration = create_configuration(session, steps=STEPS)
        session.commit()
        completed_job(session, configuration, customer)
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
        session.rollback()
        assert outbox_rows() == 0
        completed_job(session, configuration, customer)
        session.commit()
    assert outbox_rows() == 1
