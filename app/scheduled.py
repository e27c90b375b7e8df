"""Scheduled tasks: named periodic work, run by the Lambda worker on an EventBridge schedule,
or by `python tasks.py tasks:run NAME` on a server without Lambda.

A task is a function that takes a `TaskRun` and returns what it did as named counts. To add one,
write the work as a service function and add one `ScheduledTask` to `SCHEDULED_TASKS`, with the
cadence it is meant to run at; the schedule in template.yaml names it and runs it at that
cadence (a test checks both).

Every run is recorded (`task_runs`, which the system status reads) and measured (the `TaskRuns`,
`TaskDuration` and `TaskRows` metrics), whatever started it, in a transaction of its own:
recording never makes a task fail, and a failed task is recorded before its error goes on.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.internal import metrics
from app.models import TaskOutcome
from app.models import TaskRun as TaskRunRecord
from app.services import (
    deadlines,
    housekeeping,
    login_throttle,
    retention,
    rollups,
    system_status,
    webhook_delivery,
    webhooks,
)
from config import config
from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.scheduled")


@dataclass(frozen=True)
class TaskRun:
    """One run of a task: its clock and its bounds."""

    now: datetime
    batch_size: int
    max_batches: int
    session_factory: sessionmaker[Session]

    def in_batches(self, step: Callable[[Session, int], int]) -> int:
        """Run `step(session, limit)` in a transaction of its own until it handles less than a
        full batch or `max_batches` ran; return the total. Each batch commits, so locks are
        held briefly and an interrupted run keeps what it did."""
        total = 0
        for _ in range(self.max_batches):
            with self.session_factory.begin() as session:
                done = step(session, self.batch_size)
            total += done
            if done < self.batch_size:
                break
        return total


@dataclass(frozen=True)
class ScheduledTask:
    name: str
    summary: str
    # How often it is meant to run: template.yaml's schedule, and the system status calls the
    # task overdue when no run succeeded for twice as long. None: never on a schedule (run by
    # hand, or by the deploy).
    cadence: timedelta | None
    run: Callable[[TaskRun], dict[str, int]]


def clean_up_authentication(run: TaskRun) -> dict[str, int]:
    window = login_throttle.failure_window()
    return {
        "sessions_deleted": run.in_batches(
            lambda session, limit: housekeeping.delete_dead_sessions(
                session, now=run.now, limit=limit
            )
        ),
        "login_failures_cleared": run.in_batches(
            lambda session, limit: housekeeping.clear_stale_login_failures(
                session, now=run.now, window=window, limit=limit
            )
        ),
        "task_runs_deleted": run.in_batches(
            lambda session, limit: housekeeping.delete_old_task_runs(
                session,
                before=run.now - timedelta(days=config.settings.task_run_retention_days),
                limit=limit,
            )
        ),
        # The release before encryption stores plain secrets while a deploy replaces it.
        "webhook_secrets_encrypted": run.in_batches(
            lambda session, limit: webhooks.encrypt_plain_secrets(session, limit=limit)
        ),
    }


SWEEP_CADENCE = timedelta(minutes=1)


def sweep_deadlines(run: TaskRun) -> dict[str, int]:
    # The sweep first: refreshing the learnt waits reads history, and should it fail, overdue
    # jobs must still be marked. Events after this run wait by the refreshed history.
    stalled = run.in_batches(
        lambda session, limit: deadlines.sweep_deadlines(session, now=run.now, limit=limit)
    )
    with run.session_factory.begin() as session:
        refreshed = deadlines.refresh_step_timings(
            session, now=run.now, policy=deadlines.LearntWait.from_settings()
        )
    # The jobs that finished during the last cadence, for the metrics: runs a cadence apart
    # count each once (give or take the schedule's jitter).
    with run.session_factory() as session:
        finished = system_status.jobs_finished(
            session, since=run.now - SWEEP_CADENCE, until=run.now
        )
    metrics.emit(
        {
            metrics.JOBS_STALLED: stalled,
            metrics.JOBS_COMPLETED: finished.completed,
            metrics.JOBS_FAILED: finished.failed,
        }
    )
    return {"step_timings_refreshed": refreshed, "jobs_stalled": stalled}


def deliver_webhooks(run: TaskRun) -> dict[str, int]:
    counts = webhook_delivery.deliver_due(
        run.session_factory,
        now=run.now,
        max_claims=run.max_batches,
        policy=webhook_delivery.DeliveryPolicy.from_settings(),
    )
    # What is left waiting, for the alarm on a stuck outbox.
    with run.session_factory() as session:
        waited = system_status.oldest_due_delivery_wait(session, now=datetime.now(UTC))
    metrics.emit({metrics.WEBHOOK_OLDEST_DUE: waited.total_seconds()})
    return counts


def reencrypt_webhook_secrets(run: TaskRun) -> dict[str, int]:
    last_id = 0

    def batch(session: Session, limit: int) -> int:
        nonlocal last_id  # each batch goes on after the endpoints the one before saw
        done = webhooks.reencrypt_secrets(session, now=run.now, limit=limit, after_id=last_id)
        last_id = done.last_id
        return done.changed

    return {"webhook_secrets_reencrypted": run.in_batches(batch)}


# How long the roll-up waits for the transactions that write what it rolls up (see
# rollups.wait_for_writers); new writers queue behind it meanwhile. Past it, this run rolls only
# what was marked, and the next run tries again.
WRITERS_TIMEOUT = timedelta(seconds=2)


def roll_up_periods(run: TaskRun) -> dict[str, int]:
    marked = run.in_batches(lambda session, limit: rollups.roll_marked(session, limit=limit))
    with run.session_factory.begin() as session:
        closed = rollups.close_periods(session, now=run.now)
    for table in rollups.MARKED_TABLES:
        with run.session_factory.begin() as session:
            rollups.wait_for_writers(session, table=table, timeout=WRITERS_TIMEOUT)
    rolled = 0
    for _ in range(run.max_batches):
        with run.session_factory.begin() as session:
            if rollups.roll_forward(session, until=closed) is None:
                break
        rolled += 1
    return {"marked_periods_rolled": marked, "stretches_rolled_forward": rolled}


def prune_events(run: TaskRun) -> dict[str, int]:
    cutoff = retention.retention_cutoff(
        now=run.now, retention_days=config.settings.event_retention_days
    )
    if cutoff is None:
        return {"events_pruned": 0}
    with run.session_factory.begin() as session:
        pruning = retention.start_pruning(session, cutoff=cutoff)
    pruned = run.in_batches(
        lambda session, limit: retention.prune_batch(session, pruning=pruning, limit=limit)
    )
    return {"events_pruned": pruned}


SCHEDULED_TASKS: dict[str, ScheduledTask] = {
    task.name: task
    for task in (
        ScheduledTask(
            "auth_cleanup",
            "delete expired and revoked sessions, forget login failures past their window, "
            "delete task runs older than TASK_RUN_RETENTION_DAYS, encrypt webhook signing "
            "secrets stored in plain text",
            timedelta(minutes=5),
            clean_up_authentication,
        ),
        ScheduledTask(
            "sweep_deadlines",
            "learn each step's wait from history, mark open jobs past their deadline stalled",
            SWEEP_CADENCE,
            sweep_deadlines,
        ),
        ScheduledTask(
            "deliver_webhooks",
            "send the webhook notifications that are due, retrying failures with backoff",
            timedelta(minutes=1),
            deliver_webhooks,
        ),
        ScheduledTask(
            "reencrypt_webhook_secrets",
            "encrypt webhook signing secrets under the first WEBHOOK_SECRET_KEYS key (the deploy "
            "runs it after migrating); forget rotated-out secrets past their overlap",
            None,
            reencrypt_webhook_secrets,
        ),
        ScheduledTask(
            "roll_up_periods",
            "sum billing and funnel figures of closed days ahead; sum changed ones again",
            timedelta(minutes=15),
            roll_up_periods,
        ),
        ScheduledTask(
            "prune_events",
            "delete raw events older than EVENT_RETENTION_DAYS (never unresolved errors)",
            timedelta(hours=1),
            prune_events,
        ),
    )
}


class UnknownTask(LookupError):
    """No scheduled task has that name; the message lists those that exist."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown scheduled task {name!r}: expected one of {', '.join(SCHEDULED_TASKS)}"
        )


def run_task(name: str, *, now: datetime | None = None) -> dict[str, int]:
    """Run the task named `name` against the configured database, record the run and return
    its counts; a task that fails is recorded, then its error is raised again."""
    task = SCHEDULED_TASKS.get(name)
    if task is None:
        raise UnknownTask(name)
    settings = config.settings
    run = TaskRun(
        now=now or datetime.now(UTC),
        batch_size=settings.task_batch_size,
        max_batches=settings.task_max_batches,
        session_factory=config.database.SessionLocal,
    )
    started_at, started = datetime.now(UTC), time.perf_counter()
    try:
        counts = task.run(run)
    except Exception as error:
        _record(name, started_at=started_at, started=started, counts={}, error=error)
        raise
    milliseconds = _record(name, started_at=started_at, started=started, counts=counts)
    logger.info(
        "Scheduled task %s done in %.0f ms",
        name,
        milliseconds,
        extra={"task": name, "counts": counts},
    )
    return counts


def _record(
    name: str,
    *,
    started_at: datetime,
    started: float,
    counts: dict[str, int],
    error: Exception | None = None,
) -> float:
    """Record and measure one run, never raising; answer its duration in milliseconds."""
    milliseconds = (time.perf_counter() - started) * 1000
    outcome = TaskOutcome.SUCCEEDED if error is None else TaskOutcome.FAILED
    rows = sum(counts.values())
    try:
        metrics.emit(
            {
                metrics.TASK_RUNS: 1,
                metrics.TASK_DURATION: round(milliseconds, 1),
                metrics.TASK_ROWS: rows,
            },
            Task=name,
            Outcome=outcome.value,
        )
        # A session of its own: the task's sessions may be in any state, or the database gone.
        with config.database.SessionLocal.begin() as session:
            session.add(
                TaskRunRecord(
                    task=name,
                    started_at=started_at,
                    finished_at=started_at + timedelta(milliseconds=milliseconds),
                    outcome=outcome,
                    counts=counts,
                    rows=rows,
                    error_type=None if error is None else _error_type(error),
                    error_message=None if error is None else str(error)[:MAX_ERROR_MESSAGE],
                )
            )
    except Exception:
        logger.exception("Could not record a run of the scheduled task %s", name)
    return milliseconds


# The longest error message a run keeps (a statement's error carries the statement).
MAX_ERROR_MESSAGE = 2000


def _error_type(error: Exception) -> str:
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"[:200]
