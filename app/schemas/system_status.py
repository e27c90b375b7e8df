import enum
from datetime import datetime

from pydantic import Field

from app.schemas.base import Schema


class Verdict(enum.StrEnum):
    """From best to worst; see README, "Operating", for each entry's thresholds."""

    OK = "ok"
    WARNING = "warning"
    FAILING = "failing"

    @classmethod
    def worst(cls, *verdicts: "Verdict") -> "Verdict":
        order = list(cls)
        return max(verdicts, key=order.index, default=cls.OK)


class TaskStatus(Schema):
    name: str
    cadence_seconds: int | None = Field(
        description="How often the task is meant to run; null for a task on no schedule."
    )
    last_run_at: datetime | None = Field(description="When its latest recorded run started.")
    last_run_outcome: str | None = Field(description="`succeeded` or `failed`.")
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None = Field(description="The latest failure's error type and message.")
    overdue: bool = Field(description="No run succeeded within twice the cadence.")
    verdict: Verdict


class WebhookBacklog(Schema):
    pending: int = Field(description="Deliveries not yet delivered nor given up.")
    oldest_pending_seconds: float | None = Field(description="Age of the oldest of them.")
    oldest_due_wait_seconds: float = Field(
        description=(
            "How long the delivery most overdue has waited past its time (0: none), of the "
            "endpoints the worker sends for (enabled ones)."
        )
    )
    endpoints_disabled: int = Field(
        description="Endpoints delivery disabled after failing too long (not those turned off)."
    )
    verdict: Verdict


class DeadlineBacklog(Schema):
    unswept: int = Field(description="Open jobs past their deadline that no sweep marked yet.")
    oldest_unswept_seconds: float | None = Field(
        description="How long ago the earliest of those deadlines passed."
    )
    verdict: Verdict


class RollupBacklog(Schema):
    rolled_until: datetime | None = Field(description="Closed periods are rolled up until here.")
    lag_seconds: float = Field(
        description="How long the newest closed period not yet rolled up has been waiting "
        "(0: every closed period is rolled up)."
    )
    marks_waiting: int = Field(description="Changed closed periods waiting to be rolled again.")
    verdict: Verdict


class RetentionBacklog(Schema):
    retention_days: int
    overdue_seconds: float = Field(
        description="How far past the retention the oldest prunable event is (0: none)."
    )
    verdict: Verdict


class Backlogs(Schema):
    webhook_deliveries: WebhookBacklog
    deadlines: DeadlineBacklog
    rollups: RollupBacklog
    event_retention: RetentionBacklog | None = Field(
        description="Only when EVENT_RETENTION_DAYS is set."
    )


class SystemStatus(Schema):
    verdict: Verdict = Field(description="The worst verdict below.")
    checked_at: datetime
    tasks: list[TaskStatus]
    backlogs: Backlogs
