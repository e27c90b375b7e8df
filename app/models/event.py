import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin


class EventKind(enum.StrEnum):
    STEP = "step"
    ERROR = "error"
    INFO = "info"


class Event(IdMixin, Base):
    """Something a script reported for a job. Append-only, but for an error's `resolved_at`."""

    __tablename__ = "events"
    __table_args__ = (
        # A client's idempotency key is unique per job (NULLs never collide).
        Index("uq_events_job_id_event_id", "job_id", "event_id", unique=True),
        Index("ix_events_job_id_id", "job_id", "id"),
        Index(
            "ix_events_unresolved_errors",
            "job_id",
            "step_id",
            postgresql_where=text("kind = 'error' AND resolved_at IS NULL"),
        ),
    )

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[EventKind] = mapped_column(
        Enum(EventKind, name="event_kind", values_callable=lambda s: [m.value for m in s])
    )
    step_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("job_configuration_steps.id", ondelete="RESTRICT")
    )
    step_tag: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
