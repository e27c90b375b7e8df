import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    false,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.internal.quantiles import bucket_key
from app.models.base import Base, IdMixin, TimestampMixin
from app.models.job_configuration import JobConfiguration, Money


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Pending or running past its deadline (the sweep); its next event moves it on as usual.
    STALLED = "stalled"


class Job(IdMixin, TimestampMixin, Base):
    """One run of a configuration version for a customer.

    The row carries the job's current progress, cost, status and counters, updated in the same
    transaction as the event that changes them, so reads never scan events.
    """

    __tablename__ = "jobs"
    # Read the database-made values (updated_at, progress) back in the UPDATE itself.
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint("completed_points <= total_points", name="points_within_total"),
        Index("ix_jobs_customer_id_created_at", "customer_id", "created_at", "id"),
        Index("ix_jobs_customer_id_updated_at", "customer_id", "updated_at", "id"),
        Index("ix_jobs_customer_id_status_created_at", "customer_id", "status", "created_at", "id"),
        Index("ix_jobs_created_at", "created_at", "id"),
        Index("ix_jobs_updated_at", "updated_at", "id"),
        Index("ix_jobs_progress", "progress", "id"),
        # Analytics of one configuration version over a creation range.
        Index("ix_jobs_configuration_id_created_at", "configuration_id", "created_at"),
        # Billing: jobs completed, and jobs failed, in a period, of one customer or of all. Partial,
        # so updates of running jobs (most updates) never touch them.
        Index(
            "ix_jobs_customer_id_completed_at",
            "customer_id",
            "completed_at",
            postgresql_where=text("completed_at IS NOT NULL"),
        ),
        Index(
            "ix_jobs_completed_at_customer_id",
            "completed_at",
            "customer_id",
            postgresql_where=text("completed_at IS NOT NULL"),
        ),
        Index(
            "ix_jobs_last_event_at_customer_id_failed",
            "last_event_at",
            "customer_id",
            postgresql_where=text("status = 'failed'"),
        ),
        # The deadline sweep: open jobs by deadline. Partial, so finished jobs never enter it.
        Index(
            "ix_jobs_deadline_at_open",
            "deadline_at",
            postgresql_where=text("status IN ('pending', 'running') AND deadline_at IS NOT NULL"),
        ),
        # provider_job_id prefix search (q=...) whatever the database's collation.
        Index(
            "ix_jobs_provider_job_id_pattern",
            "provider_job_id",
            postgresql_ops={"provider_job_id": "text_pattern_ops"},
        ),
    )

    provider_job_id: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="RESTRICT")
    )
    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="RESTRICT")
    )
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)

    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", values_callable=lambda s: [m.value for m in s]),
        default=JobStatus.PENDING,
        server_default=JobStatus.PENDING.value,
    )
    step_count: Mapped[int] = mapped_column(Integer)
    steps_completed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_points: Mapped[int] = mapped_column(BigInteger)
    completed_points: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    progress: Mapped[Decimal] = mapped_column(
        Numeric, Computed("completed_points::numeric / total_points", persisted=True)
    )
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")
    event_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unresolved_error_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The latest of its steps' completion times: where the next step's time is counted from.
    last_step_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The earliest deadline that applies to a pending or running job (the database function
    # `job_deadline`), moved by every event; None when none applies or the job is finished.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Events deleted by the retention policy (the `prune_events` task), and the cutoff of the
    # latest run that deleted any: every pruned event was received before it. The counters above
    # still count them.
    events_pruned_count: Mapped[int] = mapped_column(Integer, server_default="0")
    events_pruned_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    configuration: Mapped[JobConfiguration] = relationship(lazy="raise")

    @property
    def tag(self) -> str:
        return self.configuration.tag

    @property
    def version(self) -> int:
        return self.configuration.version


class JobStepMixin:
    """The key of a record about one step of one job, with the job's customer, configuration
    version and creation time copied, so that billing and analytics need no join with jobs."""

    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configuration_steps.id", ondelete="RESTRICT"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="RESTRICT")
    )
    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="RESTRICT")
    )
    # Nothing may change a job's created_at once it has completions or errors.
    job_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobStepCompletion(JobStepMixin, Base):
    """The first completion of one step of one job: what billing counts."""

    __tablename__ = "job_step_completions"
    __table_args__ = (
        Index("ix_job_step_completions_customer_id_completed_at", "customer_id", "completed_at"),
        Index("ix_job_step_completions_completed_at", "completed_at"),
        # The steps funnel: the completions of one configuration version's jobs created in a range.
        Index(
            "ix_job_step_completions_configuration_id_job_created_at",
            "configuration_id",
            "job_created_at",
        ),
    )

    event_id: Mapped[int] = mapped_column(BigInteger)
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    points: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Money)
    # The time from the job's previous completed step (by completion time, then step order), or
    # from its creation, to this one; kept right by `apply_events` whatever the arrival order.
    seconds_since_previous: Mapped[float] = mapped_column(Double)
    # Its bucket in the funnel's histogram of times (app.internal.quantiles), kept by PostgreSQL.
    seconds_bucket: Mapped[int] = mapped_column(
        Integer, Computed(bucket_key(literal_column("seconds_since_previous")), persisted=True)
    )


class JobStepError(JobStepMixin, Base):
    """The error events that named one step of one job, counted: what analytics read instead of
    the events."""

    __tablename__ = "job_step_errors"
    __table_args__ = (
        # The errors of one configuration version, of every customer or one.
        Index("ix_job_step_errors_configuration_id_customer_id", "configuration_id", "customer_id"),
        Index(
            "ix_job_step_errors_configuration_id_job_created_at",
            "configuration_id",
            "job_created_at",
        ),
    )

    error_count: Mapped[int] = mapped_column(Integer)
    first_error_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Whether the job has completed the step too (a retry that succeeded), kept by
    # `apply_events`: jobs that failed at a step and never completed it still reached it.
    step_completed: Mapped[bool] = mapped_column(Boolean, server_default=false())


class JobStepTiming(Base):
    """How long one step of one configuration version takes, from the recorded completions
    (`seconds_since_previous`), refreshed by the deadline sweep: one row read per event tells
    the deadline how long to wait for this step, and the ETA what the remaining steps take."""

    __tablename__ = "job_step_timings"

    step_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configuration_steps.id", ondelete="CASCADE"), primary_key=True
    )
    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="CASCADE"), index=True
    )
    sample_count: Mapped[int] = mapped_column(Integer)
    median_seconds: Mapped[float] = mapped_column(Double)
    p90_seconds: Mapped[float] = mapped_column(Double)
    # The learnt wait for the step: the configured quantile times the factor, at least the
    # floor; None until the step has enough samples.
    wait_seconds: Mapped[float | None] = mapped_column(Double)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
