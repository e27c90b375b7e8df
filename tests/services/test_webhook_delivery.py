"""Webhook delivery against a real HTTP receiver: signed as Standard Webhooks says, retried with
backoff (and jitter) while the receiver fails or is down, the same message every time; endpoints
that keep failing are disabled; two workers never send the same attempt, nor a redelivery a
leased one; the outbox is transactional. Each attempt resolves the receiver's name once and
connects to the address it checked, never follows a redirect, and ends at its deadline."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.internal.destinations import Resolver, system_resolver
from app.internal.webhook_signing import generate_secret
from app.models import (
    Customer,
    DeliveryStatus,
    EventKind,
    Job,
    JobConfiguration,
    User,
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
from app.services.webhook_delivery import DeliveryPolicy, Network
from config import config
from tests.helpers.factories import create_admin, create_configuration, create_customer, unique
from tests.helpers.tls import new_authority
from tests.helpers.webhook_receiver import DrippingReceiver, Receiver

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
    db: Session, url: str, customer: Customer | None = None, resolve: Resolver = system_resolver
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
        resolve=resolve,
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
    sessions: sessionmaker[Session],
    now: datetime,
    policy: DeliveryPolicy = POLICY,
    network: Network | None = None,
) -> dict[str, int]:
    return webhook_delivery.deliver_due(
        sessions, now=now, max_claims=10, policy=policy, network=network
    )


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


def test_a_claim_late_in_a_long_run_is_leased_from_its_own_time(db: Session) -> None:
    customer = create_customer(db)
    register(db, "https://hooks.example/a", customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    started = datetime.now(UTC) - timedelta(minutes=30)  # longer ago than a lease lasts
    the_delivery(db).next_attempt_at = started - timedelta(minutes=1)
    db.flush()
    claimed_at = datetime.now(UTC)
    assert len(webhook_delivery.claim(db, now=started, policy=POLICY)) == 1
    leased_until = the_delivery(db).leased_until
    assert leased_until is not None
    assert leased_until >= claimed_at + POLICY.lease


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


# Where an attempt connects, and for how long --------------------------------------------------

PRODUCTION = DeliveryPolicy(
    **{**POLICY.__dict__, "allow_private_addresses": False, "timeout_seconds": 1}
)


class Rebinding:
    """A resolver whose name answers a public address, then (from the `public`-th answer on)
    the loopback address of the tests' receiver: the DNS rebinding attack."""

    def __init__(self, public: int, public_address: str = "2001:4860:4860::8888") -> None:
        self.public, self.public_address = public, public_address
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.public_address] if self.calls <= self.public else ["127.0.0.1"]


def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_it(
    db: Session,
    sessions: sessionmaker[Session],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registration and the attempt each resolve once; the attempt connects to the public
    address it checked (which does not answer here), never to a later answer."""
    customer = create_customer(db)
    rebinding = Rebinding(public=2)
    url = f"http://rebinding.test:{receiver.port}/hooks"
    monkeypatch.setattr(config.settings, "webhook_allow_private_addresses", False)
    register(db, url, customer, resolve=rebinding)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    network = Network(resolve=rebinding)
    assert deliver(sessions, datetime.now(UTC), PRODUCTION, network) == {
        "delivered": 0,
        "failed": 1,
    }
    assert rebinding.calls == 2
    assert receiver.requests == []
    last_error = the_delivery(db).last_error or ""
    assert "(connecting to 2001:4860:4860::8888)" in last_error

    # The next attempt resolves again, gets the loopback address, and refuses it.
    assert deliver(sessions, datetime.now(UTC) + timedelta(hours=1), PRODUCTION, network) == {
        "delivered": 0,
        "failed": 1,
    }
    assert rebinding.calls == 3
    assert receiver.requests == []
    assert "resolves to 127.0.0.1, which is not a public address" in (
        the_delivery(db).last_error or ""
    )


@pytest.mark.parametrize("wrapped", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1"])
def test_a_wrapped_loopback_address_is_refused_at_delivery(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver, wrapped: str
) -> None:
    customer = create_customer(db)
    register(db, f"http://wrapped.test:{receiver.port}/hooks", customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    network = Network(resolve=lambda host, port: [wrapped])
    assert deliver(sessions, datetime.now(UTC), PRODUCTION, network)["failed"] == 1
    assert receiver.requests == []
    assert "not a public address" in (the_delivery(db).last_error or "")


def test_an_attempt_connects_to_the_resolved_address_with_the_name_in_host_and_tls(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """`receiver.test` resolves nowhere but through the test's resolver; the certificate names
    it, and a trusted test authority signed it."""
    authority = new_authority()
    receiver = Receiver(tls=authority.server_context("receiver.test"))
    try:
        customer = create_customer(db)
        _, secret = register(db, receiver.url_for("receiver.test"), customer)
        completed_job(db, create_configuration(db, steps=STEPS), customer)
        network = Network(
            resolve=lambda host, port: ["127.0.0.1"] if host == "receiver.test" else [],
            ssl_context=authority.client_context(),
        )
        assert deliver(sessions, datetime.now(UTC), network=network) == {
            "delivered": 1,
            "failed": 0,
        }
        [request] = receiver.requests
        assert request.headers["host"] == f"receiver.test:{receiver.port}"
        assert receiver.server_names == ["receiver.test"]
        assert request.signed_by(secret)
    finally:
        receiver.stop()


def test_a_redirect_is_not_followed_and_the_attempt_failed(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    elsewhere = Receiver()
    try:
        customer = create_customer(db)
        register(db, receiver.url, customer)
        completed_job(db, create_configuration(db, steps=STEPS), customer)
        receiver.answers.append(307)
        receiver.answer_headers["location"] = elsewhere.url
        assert deliver(sessions, datetime.now(UTC)) == {"delivered": 0, "failed": 1}
        assert elsewhere.requests == []
        delivery = the_delivery(db)
        assert (delivery.status, delivery.last_error) == (DeliveryStatus.PENDING, "HTTP 307")
    finally:
        elsewhere.stop()


def test_a_receiver_that_drips_its_answer_is_cut_off_and_the_attempt_failed(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    dripping = DrippingReceiver(interval=0.02)
    try:
        customer = create_customer(db)
        register(db, dripping.url, customer)
        completed_job(db, create_configuration(db, steps=STEPS), customer)
        policy = DeliveryPolicy(**{**POLICY.__dict__, "timeout_seconds": 0.5})
        now = datetime.now(UTC)
        assert deliver(sessions, now, policy) == {"delivered": 0, "failed": 1}
        delivery = the_delivery(db)
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.next_attempt_at == now + timedelta(seconds=30)
        assert delivery.last_status_code is None
        assert "Timeout" in (delivery.last_error or "")
        assert attempt_codes(db, delivery) == [None]
        assert dripping.hung_up.wait(timeout=30)
    finally:
        dripping.stop()


def test_a_port_no_longer_allowed_is_refused_at_delivery(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    policy = DeliveryPolicy(**{**POLICY.__dict__, "allowed_ports": (443,)})
    assert deliver(sessions, datetime.now(UTC), policy)["failed"] == 1
    assert receiver.requests == []
    assert f"port {receiver.port} is not allowed" in (the_delivery(db).last_error or "")


# Jitter and redeliveries -----------------------------------------------------------------------


def test_a_retry_waits_the_backoff_shortened_by_up_to_the_jitter_share(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    policy = DeliveryPolicy(**{**POLICY.__dict__, "jitter": 0.25})
    assert policy.jittered_delay(1, lambda: 0.0) == timedelta(seconds=30)
    assert policy.jittered_delay(3, lambda: 0.5) == timedelta(seconds=120 * 0.875)
    assert policy.jittered_delay(3, lambda: 0.9999) > timedelta(seconds=90)

    customer = create_customer(db)
    register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    receiver.answers.append(500)
    now = datetime.now(UTC)
    deliver(sessions, now, policy, Network(draw=lambda: 0.4))
    assert the_delivery(db).next_attempt_at == now + timedelta(seconds=30 * 0.9)


def test_jittered_waits_spread_and_stay_within_their_bounds() -> None:
    policy = DeliveryPolicy.from_settings()
    waits = {policy.jittered_delay(4, Network().draw) for _ in range(200)}
    assert len(waits) > 1
    assert all(policy.delay(4) * 0.75 <= wait <= policy.delay(4) for wait in waits)


@pytest.mark.usefixtures("committed")
def test_a_redelivery_asked_for_while_the_delivery_is_being_sent_does_not_send_it_again(
    receiver: Receiver,
) -> None:
    with config.database.SessionLocal() as session:
        admin = create_admin(session)
        customer = create_customer(session)
        endpoint, _ = register(session, receiver.url, customer)
        completed_job(session, create_configuration(session, steps=STEPS), customer)
        session.commit()
        admin_id, endpoint_id, delivery_id = admin.id, endpoint.id, the_delivery(session).id
    receiver.hold = threading.Event()
    counts: dict[str, dict[str, int]] = {}

    def worker(name: str) -> None:
        counts[name] = webhook_delivery.deliver_due(
            config.database.SessionLocal, now=datetime.now(UTC), max_claims=10, policy=POLICY
        )

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    try:
        assert receiver.arrived.wait(timeout=30)  # the first worker is sending it now
        with config.database.SessionLocal.begin() as session:
            webhooks.redeliver(
                session,
                caller=Caller(user=session.get_one(User, admin_id)),
                webhook_id=endpoint_id,
                delivery_id=delivery_id,
            )
        second = threading.Thread(target=worker, args=("second",))
        second.start()
        second.join(timeout=60)
        assert counts["second"] == {"delivered": 0, "failed": 0}
    finally:
        receiver.hold.set()
        first.join(timeout=60)
    assert counts["first"] == {"delivered": 1, "failed": 0}
    assert len(receiver.requests) == 1
    with config.database.SessionLocal() as session:
        delivery = session.get_one(WebhookDelivery, delivery_id)
        assert (delivery.status, delivery.leased_until) == (DeliveryStatus.DELIVERED, None)


def test_an_endpoint_from_before_encryption_waits_for_the_task_then_signs_with_its_secret(
    db: Session, sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    customer = create_customer(db)
    secret = generate_secret()
    db.add(
        WebhookEndpoint(
            customer_id=customer.id,
            url=receiver.url,
            event_types=list(WebhookEventType),
            unencrypted_secret=secret,
        )
    )
    db.flush()
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    now = datetime.now(UTC)
    assert deliver(sessions, now) == {"delivered": 0, "failed": 0}
    assert webhooks.reencrypt_secrets(db, now=now, limit=10).changed == 1
    assert deliver(sessions, now) == {"delivered": 1, "failed": 0}
    assert receiver.requests[0].signed_by(secret)


def test_a_secret_no_configured_key_decrypts_fails_the_attempt_and_sends_nothing(
    db: Session,
    sessions: sessionmaker[Session],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = create_customer(db)
    register(db, receiver.url, customer)
    completed_job(db, create_configuration(db, steps=STEPS), customer)
    # The key it was encrypted under was dropped before the secrets were re-encrypted.
    monkeypatch.setattr(config.settings, "webhook_secret_keys", [SecretStr("x" * 40)])
    assert deliver(sessions, datetime.now(UTC)) == {"delivered": 0, "failed": 1}
    assert receiver.requests == []
    assert "WEBHOOK_SECRET_KEYS" in (the_delivery(db).last_error or "")
