from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, IdMixin

# Money: exact decimals with 4 places, everywhere.
Money = Numeric(18, 4)
# The longest start and step timeouts (30 days), and job timeout (a year), in seconds.
MAX_STEP_TIMEOUT_SECONDS = 30 * 24 * 3600
MAX_JOB_TIMEOUT_SECONDS = 365 * 24 * 3600


class JobConfiguration(IdMixin, Base):
    """One immutable version of a named list of steps; jobs pin the version they started with."""

    __tablename__ = "job_configurations"
    __table_args__ = (
        UniqueConstraint("tag", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            f"start_timeout BETWEEN 1 AND {MAX_STEP_TIMEOUT_SECONDS}", name="start_timeout_range"
        ),
        CheckConstraint(
            f"step_timeout BETWEEN 1 AND {MAX_STEP_TIMEOUT_SECONDS}", name="step_timeout_range"
        ),
        CheckConstraint(
            f"job_timeout BETWEEN 1 AND {MAX_JOB_TIMEOUT_SECONDS}", name="job_timeout_range"
        ),
    )

    tag: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the canonical content, so an unchanged upload is recognised in one lookup.
    content_hash: Mapped[str] = mapped_column(String(64))
    step_count: Mapped[int] = mapped_column(Integer)
    total_points: Mapped[int] = mapped_column(BigInteger)
    total_cost: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Deadlines, in seconds: for the first event after creation, between events (else learnt
    # from the version's history), and for the whole job from creation. None: no such limit.
    start_timeout: Mapped[int | None] = mapped_column(Integer)
    step_timeout: Mapped[int | None] = mapped_column(Integer)
    job_timeout: Mapped[int | None] = mapped_column(Integer)

    steps: Mapped[list["JobConfigurationStep"]] = relationship(
        lazy="raise", order_by="JobConfigurationStep.position", back_populates="configuration"
    )


class JobConfigurationStep(IdMixin, Base):
    __tablename__ = "job_configuration_steps"
    __table_args__ = (
        UniqueConstraint("configuration_id", "tag"),
        UniqueConstraint("configuration_id", "position"),
        CheckConstraint("points BETWEEN 1 AND 1000000", name="points_range"),
        CheckConstraint("cost >= 0", name="cost_not_negative"),
    )

    configuration_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_configurations.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    tag: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Money)

    configuration: Mapped[JobConfiguration] = relationship(lazy="raise", back_populates="steps")
