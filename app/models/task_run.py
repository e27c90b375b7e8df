import enum
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Enum, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin


class TaskOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TaskRun(IdMixin, Base):
    """One finished run of a scheduled task, whatever started it; kept TASK_RUN_RETENTION_DAYS
    (the `auth_cleanup` task deletes older ones)."""

    __tablename__ = "task_runs"
    __table_args__ = (
        # The system status: each task's latest success and latest failure.
        Index("ix_task_runs_task_outcome_started_at", "task", "outcome", "started_at"),
    )

    task: Mapped[str] = mapped_column(String(64))
    # The retention's deletes, oldest first.
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[TaskOutcome] = mapped_column(
        Enum(TaskOutcome, name="task_outcome", values_callable=lambda s: [m.value for m in s])
    )
    # What the task changed: its named counts, and their sum.
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    rows: Mapped[int] = mapped_column(Integer, server_default="0")
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(String(2000))
