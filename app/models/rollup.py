"""Rollups of closed periods: what billing and analytics read instead of the per-step tables for
the past, kept by the scheduled task `roll_up_periods` (app/services/rollups/), never on the
event hot path.

`rollup_state` says how far they reach. Triggers on jobs, job_step_completions and
job_step_errors (the migration "rollups of closed periods") append a mark for every change to a
period before `closed_until`, in the writer's transaction; a marked period is read from the
per-step tables until the task rolls it up again. The marks are appended, never updated, so
concurrent writers never wait for one another's mark.
"""

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin
from app.models.job_configuration import Money

# Rollup rows of every customer together, in the funnel's tables.
ALL_CUSTOMERS = 0


class RollupState(Base):
    """The one row that says how far the rollups reach. Writers mark changes before
    `closed_until`; reads use the rollups before `rolled_until` (never later than the other)."""

    __tablename__ = "rollup_state"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=1)
    closed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rolled_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UsageLevel(enum.StrEnum):
    """The grains of the usage rollups, in UTC. A read uses the coarsest whose buckets each fall
    whole into one period of its zone: days for UTC, hours for zones with whole-hour offsets,
    quarter hours for the others."""

    QUARTER_HOUR = "quarter_hour"
    HOUR = "hour"
    DAY = "day"


class UsageRollup(Base):
    """What billing counts in one bucket (UTC) of one customer and configuration version: jobs
    created and completed, steps completed, their points and cost. Quarter hours are summed
    from the per-step tables, hours and days from the quarter hours."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        # Usage of one customer over a range (the primary key serves all customers).
        Index("ix_usage_rollups_level_customer_id_bucket_at", "level", "customer_id", "bucket_at"),
    )

    level: Mapped[UsageLevel] = mapped_column(
        Enum(UsageLevel, name="usage_level", values_callable=lambda s: [m.value for m in s]),
        primary_key=True,
    )
    bucket_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="CASCADE"), primary_key=True
    )
    jobs_started: Mapped[int] = mapped_column(Integer)
    jobs_completed: Mapped[int] = mapped_column(Integer)
    steps_completed: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[Decimal] = mapped_column(Money)


class UsageRollupMark(IdMixin, Base):
    """A quarter hour whose usage changed after it was closed: read live until rolled again."""

    __tablename__ = "usage_rollup_marks"

    bucket_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Level(enum.StrEnum):
    """The grain of a funnel rollup row: a UTC day or a UTC month of job creation."""

    DAY = "day"
    MONTH = "month"


class FunnelRollupMixin:
    """The key of a funnel rollup row: the jobs of one configuration version created in one
    day or month (UTC), of one customer or of all of them (ALL_CUSTOMERS)."""

    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="CASCADE"), primary_key=True
    )
    level: Mapped[Level] = mapped_column(
        Enum(Level, name="rollup_level", values_callable=lambda s: [m.value for m in s]),
        primary_key=True,
    )
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class FunnelJobRollup(FunnelRollupMixin, Base):
    """How many jobs the cohort has."""

    __tablename__ = "funnel_job_rollups"

    jobs: Mapped[int] = mapped_column(Integer)


class FunnelStepRollup(FunnelRollupMixin, Base):
    """The cohort's completions of one step, as a histogram of their times: the buckets
    (app.internal.quantiles) in order, and the count of each. One row per step, not per
    bucket: a month of a step is one row to read instead of hundreds."""

    __tablename__ = "funnel_step_rollups"

    step_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seconds_buckets: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    completions: Mapped[list[int]] = mapped_column(ARRAY(Integer))


class FunnelErrorRollup(FunnelRollupMixin, Base):
    """The cohort's error events naming one step, and its jobs that failed there and never
    completed it."""

    __tablename__ = "funnel_error_rollups"

    step_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    errors: Mapped[int] = mapped_column(BigInteger)
    failed_only: Mapped[int] = mapped_column(Integer)


class FunnelRollupMark(IdMixin, Base):
    """A day (UTC) of job creation whose funnel changed after it was closed."""

    __tablename__ = "funnel_rollup_marks"
    __table_args__ = (
        Index("ix_funnel_rollup_marks_configuration_id_day", "configuration_id", "day"),
    )

    configuration_id: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[datetime] = mapped_column(DateTime(timezone=True))
