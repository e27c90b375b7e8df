"""Sending the outbox: the `deliver_webhooks` task.

Each run claims due deliveries of enabled endpoints a few at a time (`FOR UPDATE SKIP LOCKED`,
then a lease: the claim moves `next_attempt_at` past the time the batch may take, and commits),
so two workers never send the same attempt at once, and a worker that dies mid-batch leaves its
deliveries to be tried again when the lease ends. Delivery is therefore at least once: the
`webhook-id` header is the same on every attempt, and receivers dedupe by it.

The body is made at the first attempt (the job as `GET /jobs/{id}` shows it then, with the
event type) and sent byte for byte by every later one. A failure is retried after
base * 2^(failures - 1) seconds (at most the maximum delay) until the retries have spanned the
retry window; an endpoint that has failed continuously for the disable window is disabled.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.internal import metrics
from app.internal.destinations import refused_address
from app.internal.webhook_signing import signed_headers
from app.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from app.schemas.webhook import WebhookNotification
from app.services.job_details import job_detail_by_id
from config import config

# Deliveries claimed at once: a claim's lease covers sending all of them, one after another.
CLAIM_SIZE = 20
# No new claim after this long: a run ends well within the worker's 5-minute Lambda timeout
# (what is left waits for the next run).
RUN_BUDGET_SECONDS = 180.0
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float
    base_delay_seconds: int
    max_delay_seconds: int
    retry_window: timedelta
    disable_after: timedelta
    allow_private_addresses: bool

    @classmethod
    def from_settings(cls) -> "DeliveryPolicy":
        settings = config.settings
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            base_delay_seconds=settings.webhook_retry_base_seconds,
            max_delay_seconds=settings.webhook_retry_max_delay_seconds,
            retry_window=timedelta(hours=settings.webhook_retry_window_hours),
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
            allow_private_addresses=settings.webhook_allow_private_addresses,
        )

    def delay(self, failures: int) -> timedelta:
        """The wait after the `failures`-th failure in a row."""
        exponent = min(failures - 1, 30)
        return timedelta(seconds=min(self.base_delay_seconds * 2**exponent, self.max_delay_seconds))

    def retries_after(self, failures: int) -> bool:
        """Whether to try again after the `failures`-th failure: until the waits so far span
        the retry window."""
        waited = sum((self.delay(n) for n in range(1, failures)), timedelta())
        return waited < self.retry_window

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout_seconds * CLAIM_SIZE + 60)


@dataclass(frozen=True)
class Sent:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim(session: Session, *, now: datetime, policy: DeliveryPolicy) -> list[int]:
    """Take up to CLAIM_SIZE due deliveries for this run: their next try moves past the lease."""
    due = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.enabled,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(CLAIM_SIZE)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
        # Run once: as a plain subquery it may run again per joined row, taking more.
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    return list(
        session.scalars(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == due.c.id)
            .values(next_attempt_at=now + policy.lease)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        )
    )


def _body(session: Session, delivery: WebhookDelivery, now: datetime) -> str:
    if delivery.body is None:
        job = job_detail_by_id(session, job_id=delivery.job_id, now=now)
        assert job is not None  # a job's deliveries are deleted with it
        delivery.body = WebhookNotification(
            type=WebhookEventType(delivery.event_type), timestamp=delivery.created_at, data=job
        ).model_dump_json()
    return delivery.body


def _post(client: httpx.Client, url: str, *, body: bytes, headers: dict[str, str]) -> Sent:
    started = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as failure:
        return Sent(None, f"{type(failure).__name__}: {failure}"[:MAX_ERROR_LENGTH], _ms(started))
    problem = None if response.is_success else f"HTTP {response.status_code}"
    return Sent(response.status_code, problem, _ms(started))


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def send_one(
    session_factory: sessionmaker[Session],
    client: httpx.Client,
    delivery_id: int,
    *,
    now: datetime,
    policy: DeliveryPolicy,
) -> bool:
    """Send one claimed delivery and record what happened; answer whether it was delivered."""
    with session_factory.begin() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return False  # its endpoint was deleted since the claim
        endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id)
        body = _body(session, delivery, now).encode()
        url, secret, message_id = endpoint.url, endpoint.secret, delivery.message_id
    # DNS may have changed since the endpoint was registered: checked again before each send.
    refused = None if policy.allow_private_addresses else refused_address(url)
    if refused is not None:
        sent = Sent(None, f"refused: {refused}", 0)
    else:
        headers = signed_headers(
            secret, message_id=message_id, timestamp=int(time.time()), body=body
        )
        sent = _post(client, url, body=body, headers=headers)
    with session_factory.begin() as session:
        _record(session, delivery_id, sent, now=now, policy=policy)
    outcome = "delivered" if sent.ok else "failed"
    metrics.emit(
        {metrics.WEBHOOK_DELIVERIES: 1, metrics.WEBHOOK_LATENCY: sent.duration_ms}, Outcome=outcome
    )
    return sent.ok


def _record(
    session: Session, delivery_id: int, sent: Sent, *, now: datetime, policy: DeliveryPolicy
) -> None:
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        return  # its endpoint was deleted while it was being sent
    endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            status_code=sent.status_code,
            error=sent.error,
            duration_ms=sent.duration_ms,
        )
    )
    delivery.attempt_count += 1
    if delivery.status != DeliveryStatus.PENDING:
        return  # settled by another send meanwhile (a lease that ran out): the log keeps both
    delivery.last_attempt_at = now
    delivery.last_status_code = sent.status_code
    delivery.last_error = sent.error
    if sent.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.failing_since = None
        return
    if policy.retries_after(delivery.attempt_count):
        delivery.next_attempt_at = now + policy.delay(delivery.attempt_count)
    else:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    elif endpoint.enabled and now - endpoint.failing_since >= policy.disable_after:
        endpoint.enabled = False
        endpoint.disabled_at = now
        hours = policy.disable_after.total_seconds() / 3600
        endpoint.disabled_reason = (
            f"every delivery failed for {hours:g} hours (the last: {sent.error}); fix the "
            "receiver, then PATCH enabled=true to resume"
        )[:MAX_ERROR_LENGTH]


def deliver_due(
    session_factory: sessionmaker[Session],
    *,
    now: datetime,
    max_claims: int,
    policy: DeliveryPolicy,
    client_factory: Callable[[], httpx.Client] | None = None,
) -> dict[str, int]:
    """Send what is due, CLAIM_SIZE at a time, at most `max_claims` claims and none after
    RUN_BUDGET_SECONDS; answer counts."""
    delivered = failed = 0
    make_client = client_factory or (
        lambda: httpx.Client(timeout=policy.timeout_seconds, follow_redirects=False)
    )
    started = time.monotonic()

    with make_client() as client:
        for _ in range(max_claims):
            if time.monotonic() - started > RUN_BUDGET_SECONDS:
                break
            with session_factory.begin() as session:
                claimed = claim(session, now=now, policy=policy)
            for delivery_id in claimed:
                if send_one(session_factory, client, delivery_id, now=now, policy=policy):
                    delivered += 1
                else:
                    failed += 1
            if len(claimed) < CLAIM_SIZE:
                break
    return {"delivered": delivered, "failed": failed}
