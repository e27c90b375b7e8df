"""Webhook endpoints, the outbox of their notifications, and the log of delivery attempts."""

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin, TimestampMixin


class WebhookEventType(enum.StrEnum):
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_STALLED = "job.stalled"
    JOB_CANCELLED = "job.cancelled"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # to be sent, at next_attempt_at
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # every retry failed; only a redelivery sends it again


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """Where one customer's notifications go, or (customer_id None) every customer's."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        # The system status: how many endpoints delivery disabled.
        Index(
            "ix_webhook_endpoints_disabled",
            "id",
            postgresql_where=text("disabled_at IS NOT NULL"),
        ),
        # auth_cleanup: the secrets still stored in plain text, to encrypt.
        Index(
            "ix_webhook_endpoints_unencrypted",
            "id",
            postgresql_where=text("secret IS NOT NULL"),
        ),
    )

    customer_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    # The signing secret (`whsec_` + base64 of the HMAC key), encrypted (app.internal.secret_box):
    # a read of the table is no read of the secrets. Null only for an endpoint registered
    # by a release from before encryption, until auth_cleanup (or the deploy's
    # reencrypt_webhook_secrets) encrypts it.
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # The secret as such a release stores it; the encryption empties this.
    unencrypted_secret: Mapped[str | None] = mapped_column("secret", String(100))
    # After a rotation, the secret it replaced (encrypted) signs deliveries too until then.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    # Set when the delivery worker disables an endpoint that kept failing; cleared by enabling.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    # The first failure since the last success: how long the endpoint has been failing.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(IdMixin, Base):
    """One notification for one endpoint: written to this outbox in the transaction of the
    change that causes it, sent (at least once) by the `deliver_webhooks` task."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The worker's claim: pending deliveries that are due, oldest due first.
        Index(
            "ix_webhook_deliveries_next_attempt_at_pending",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # An endpoint's delivery log, newest first.
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        # The system status: the pending deliveries, and the oldest of them.
        Index(
            "ix_webhook_deliveries_created_at_pending",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # The Standard Webhooks `webhook-id`: the same for every attempt, so receivers can dedupe.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"))
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(
            DeliveryStatus,
            name="webhook_delivery_status",
            values_callable=lambda s: [m.value for m in s],
        ),
        server_default=DeliveryStatus.PENDING.value,
    )
    # Attempts in the current round of retries (a redelivery starts a new one).
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # While a worker sends it: no other claim takes it, and a redelivery asked for meanwhile
    # waits for that send's outcome. A worker that dies mid-send leaves it to the next claim
    # after this.
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The body, made at the first attempt and sent byte for byte by every later one.
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookAttempt(IdMixin, Base):
    """One try at sending a delivery: what the endpoint answered, or why there was no answer."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)

    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)
