"""The system status: whether each scheduled task runs on time, and how far behind each backlog
is, with a verdict for each (`ok`, `warning`, `failing`) by the thresholds below.

Every figure is read through an index (a test holds each statement's plan to it), and counts
stop at COUNT_CAP, so that the answer stays fast however far behind the system is: never a
scan of events. The README's "Operating" section lists the thresholds for the operator.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, not_, select, union_all
from sqlalchemy.orm import Session

from app.models import (
    DeliveryStatus,
    Event,
    FunnelRollupMark,
    Job,
    JobStatus,
    RollupState,
    TaskOutcome,
    TaskRun,
    UsageRollupMark,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.schemas.system_status import (
    Backlogs,
    DeadlineBacklog,
    RetentionBacklog,
    RollupBacklog,
    SystemStatus,
    TaskStatus,
    Verdict,
    WebhookBacklog,
)
from app.services.deadlines import OPEN
from app.services.retention import UNRESOLVED_ERROR, retention_cutoff
from app.services.rollups import CLOSE_AFTER
from app.services.rollups.sql import DAY
from app.services.webhooks import SENDABLE

# Counts stop here: past it, the backlog's size no longer changes what to do.
COUNT_CAP = 100_000


@dataclass(frozen=True)
class Thresholds:
    """A backlog is `warning` past the first wait, `failing` past the second."""

    warning: timedelta
    failing: timedelta

    def verdict(self, waited: timedelta) -> Verdict:
        if waited > self.failing:
            return Verdict.FAILING
        return Verdict.WARNING if waited > self.warning else Verdict.OK


# A task is overdue, and `failing`, when no run succeeded for this many cadences.
OVERDUE_CADENCES = 2
# The due webhook delivery that waited longest; any disabled endpoint is a `warning` too.
WEBHOOK_WAIT = Thresholds(warning=timedelta(minutes=5), failing=timedelta(hours=1))
# The earliest deadline that passed without a sweep marking its job.
DEADLINE_WAIT = Thresholds(warning=timedelta(minutes=5), failing=timedelta(hours=1))
# The oldest closed day not rolled up, since it closed; and marks waiting to be rolled again.
ROLLUP_LAG = Thresholds(warning=timedelta(hours=1), failing=timedelta(days=1))
ROLLUP_MARKS_WARNING = 10_000
# The oldest prunable event, past the retention.
RETENTION_OVERDUE = Thresholds(warning=timedelta(hours=3), failing=timedelta(days=2))


@dataclass(frozen=True)
class Task:
    """A scheduled task as the status needs it: its name and the cadence it should run at."""

    name: str
    cadence: timedelta | None  # None: never on a schedule


def read_status(
    session: Session, *, tasks: Sequence[Task], now: datetime, retention_days: int | None
) -> SystemStatus:
    task_states = read_tasks(session, tasks=tasks, now=now)
    backlogs = Backlogs(
        webhook_deliveries=webhook_backlog(session, now=now),
        deadlines=deadline_backlog(session, now=now),
        rollups=rollup_backlog(session, now=now),
        event_retention=retention_backlog(session, now=now, retention_days=retention_days),
    )
    verdicts = [task.verdict for task in task_states] + [
        backlog.verdict
        for backlog in (
            backlogs.webhook_deliveries,
            backlogs.deadlines,
            backlogs.rollups,
            backlogs.event_retention,
        )
        if backlog is not None
    ]
    return SystemStatus(
        verdict=Verdict.worst(*verdicts), checked_at=now, tasks=task_states, backlogs=backlogs
    )


def read_tasks(session: Session, *, tasks: Sequence[Task], now: datetime) -> list[TaskStatus]:
    """Each task's latest success and latest failure, in one statement."""
    latest = [
        select(
            TaskRun.task,
            TaskRun.outcome,
            TaskRun.started_at,
            TaskRun.error_type,
            TaskRun.error_message,
        )
        .where(TaskRun.task == task.name, TaskRun.outcome == outcome)
        .order_by(TaskRun.started_at.desc())
        .limit(1)
        for task in tasks
        for outcome in TaskOutcome
    ]
    runs = {(row.task, row.outcome): row for row in session.execute(union_all(*latest))}
    return [
        task_status(
            task,
            success=runs.get((task.name, TaskOutcome.SUCCEEDED.value)),
            failure=runs.get((task.name, TaskOutcome.FAILED.value)),
            now=now,
        )
        for task in tasks
    ]


def task_status(task: Task, *, success: Any, failure: Any, now: datetime) -> TaskStatus:
    """The rule: `failing` when the latest run failed or no run succeeded within
    OVERDUE_CADENCES cadences; `warning` when no run is recorded at all; else `ok`. A task on no
    schedule is never overdue, and is `ok` until a run of it fails."""
    last_success_at = success.started_at if success is not None else None
    last_failure_at = failure.started_at if failure is not None else None
    runs = [moment for moment in (last_success_at, last_failure_at) if moment is not None]
    last_run_at = max(runs, default=None)
    failed_last = last_failure_at is not None and last_failure_at == last_run_at
    overdue = (
        task.cadence is not None
        and last_run_at is not None
        and (last_success_at is None or now - last_success_at > task.cadence * OVERDUE_CADENCES)
    )
    if failed_last or overdue:
        verdict = Verdict.FAILING
    elif last_run_at is None and task.cadence is not None:
        verdict = Verdict.WARNING
    else:
        verdict = Verdict.OK
    return TaskStatus(
        name=task.name,
        cadence_seconds=None if task.cadence is None else int(task.cadence.total_seconds()),
        last_run_at=last_run_at,
        last_run_outcome=(
            None
            if last_run_at is None
            else (TaskOutcome.FAILED if failed_last else TaskOutcome.SUCCEEDED).value
        ),
        last_success_at=last_success_at,
        last_failure_at=last_failure_at,
        last_failure=(
            None if failure is None else f"{failure.error_type}: {failure.error_message}"
        ),
        overdue=overdue,
        verdict=verdict,
    )


def _count(session: Session, rows: Select[Any]) -> int:
    """How many rows `rows` selects, up to COUNT_CAP."""
    return session.scalar(select(func.count()).select_from(rows.limit(COUNT_CAP).subquery())) or 0


def _since(now: datetime, moment: datetime | None) -> timedelta:
    return max(now - moment, timedelta(0)) if moment is not None else timedelta(0)


@dataclass(frozen=True)
class Finished:
    completed: int
    failed: int


def jobs_finished(session: Session, *, since: datetime, until: datetime) -> Finished:
    """Jobs that completed in [since, until) by their completion time, and failed jobs whose
    last event came then: the metrics of a minute, counted by the deadline sweep after it.
    A job whose events are reported late (their time before `since`) is not counted."""
    completed = _count(
        session, select(Job.completed_at).where(Job.completed_at >= since, Job.completed_at < until)
    )
    failed = _count(
        session,
        select(Job.last_event_at).where(
            Job.status == JobStatus.FAILED, Job.last_event_at >= since, Job.last_event_at < until
        ),
    )
    return Finished(completed=completed, failed=failed)


_PENDING = WebhookDelivery.status == DeliveryStatus.PENDING


def oldest_due_delivery_wait(session: Session, *, now: datetime) -> timedelta:
    """How long the pending delivery most overdue has waited past its time (0: none is due),
    of the endpoints the worker sends for: a disabled endpoint's deliveries wait by design."""
    earliest = session.scalar(
        select(WebhookDelivery.next_attempt_at)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(_PENDING, SENDABLE)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
    )
    return _since(now, earliest)


def webhook_backlog(session: Session, *, now: datetime) -> WebhookBacklog:
    pending = _count(session, select(WebhookDelivery.created_at).where(_PENDING))
    oldest = session.scalar(select(func.min(WebhookDelivery.created_at)).where(_PENDING))
    waited = oldest_due_delivery_wait(session, now=now)
    # Those delivery gave up on; one its owner turned off is no trouble of the operator's.
    disabled = _count(
        session, select(WebhookEndpoint.id).where(WebhookEndpoint.disabled_at.is_not(None))
    )
    verdict = WEBHOOK_WAIT.verdict(waited)
    if disabled:
        verdict = Verdict.worst(verdict, Verdict.WARNING)
    return WebhookBacklog(
        pending=pending,
        oldest_pending_seconds=None if oldest is None else _since(now, oldest).total_seconds(),
        oldest_due_wait_seconds=waited.total_seconds(),
        endpoints_disabled=disabled,
        verdict=verdict,
    )


def deadline_backlog(session: Session, *, now: datetime) -> DeadlineBacklog:
    unswept = (Job.status.in_(OPEN), Job.deadline_at.is_not(None), Job.deadline_at <= now)
    count = _count(session, select(Job.deadline_at).where(*unswept))
    earliest = session.scalar(select(func.min(Job.deadline_at)).where(*unswept))
    waited = _since(now, earliest)
    return DeadlineBacklog(
        unswept=count,
        oldest_unswept_seconds=None if earliest is None else waited.total_seconds(),
        verdict=DEADLINE_WAIT.verdict(waited),
    )


def rollup_backlog(session: Session, *, now: datetime) -> RollupBacklog:
    rolled_until = session.scalar(select(RollupState.rolled_until).where(RollupState.id == 1))
    # The first day not rolled up closed CLOSE_AFTER after it ended.
    lag = _since(now, None if rolled_until is None else rolled_until + DAY + CLOSE_AFTER)
    marks = _count(session, select(UsageRollupMark.bucket_at)) + _count(
        session, select(FunnelRollupMark.configuration_id)
    )
    verdict = ROLLUP_LAG.verdict(lag)
    if marks > ROLLUP_MARKS_WARNING:
        verdict = Verdict.worst(verdict, Verdict.WARNING)
    return RollupBacklog(
        rolled_until=rolled_until,
        lag_seconds=lag.total_seconds(),
        marks_waiting=marks,
        verdict=verdict,
    )


def retention_backlog(
    session: Session, *, now: datetime, retention_days: int | None
) -> RetentionBacklog | None:
    """How far past the retention the oldest prunable event is. Events are stored in id order
    as they arrive (see app/services/retention.py), so the lowest id that is not an unresolved
    error is the oldest prunable event: the primary key's first entries, never a scan."""
    cutoff = retention_cutoff(now=now, retention_days=retention_days)
    if retention_days is None or cutoff is None:
        return None
    oldest = session.scalar(
        select(Event.received_at).where(not_(UNRESOLVED_ERROR)).order_by(Event.id).limit(1)
    )
    overdue = _since(cutoff, oldest) if oldest is not None and oldest < cutoff else timedelta(0)
    return RetentionBacklog(
        retention_days=retention_days,
        overdue_seconds=overdue.total_seconds(),
        verdict=RETENTION_OVERDUE.verdict(overdue),
    )
