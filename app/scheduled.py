"""Scheduled tasks: named periodic work, run by the Lambda worker on an EventBridge schedule,
or by `python tasks.py tasks:run NAME` on a server without Lambda.

A task is a function that takes a `TaskRun` and returns what it did as named counts. To add one,
write the work as a service function and add one `ScheduledTask` to `SCHEDULED_TASKS`; the
schedule in template.yaml names it (a test checks that every schedule names a task here).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.services import (
    deadlines,
    housekeeping,
    login_throttle,
    retention,
    rollups,
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
    }


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
    return {"step_timings_refreshed": refreshed, "jobs_stalled": stalled}


def deliver_webhooks(run: TaskRun) -> dict[str, int]:
    return webhook_delivery.deliver_due(
        run.session_factory,
        now=run.now,
        max_claims=run.max_batches,
        policy=webhook_delivery.DeliveryPolicy.from_settings(),
    )


def reencrypt_webhook_secrets(run: TaskRun) -> dict[str, int]:
    return {
        "webhook_secrets_reencrypted": run.in_batches(
            lambda session, limit: webhooks.reencrypt_secrets(session, now=run.now, limit=limit)
        )
    }


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
            "delete expired and revoked sessions, forget login failures past their window",
            clean_up_authentication,
        ),
        ScheduledTask(
            "sweep_deadlines",
            "learn each step's wait from history, mark open jobs past their deadline stalled",
            sweep_deadlines,
        ),
        ScheduledTask(
            "deliver_webhooks",
            "send the webhook notifications that are due, retrying failures with backoff",
            deliver_webhooks,
        ),
        ScheduledTask(
            "reencrypt_webhook_secrets",
            "encrypt webhook signing secrets under the first WEBHOOK_SECRET_KEYS key (the deploy "
            "runs it after migrating); forget rotated-out secrets past their overlap",
            reencrypt_webhook_secrets,
        ),
        ScheduledTask(
            "roll_up_periods",
            "sum billing and funnel figures of closed days ahead; sum changed ones again",
            roll_up_periods,
        ),
        ScheduledTask(
            "prune_events",
            "delete raw events older than EVENT_RETENTION_DAYS (never unresolved errors)",
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
    """Run the task named `name` against the configured database; return its counts."""
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
    started = time.perf_counter()
    counts = task.run(run)
    logger.info(
        "Scheduled task %s done in %.0f ms",
        name,
        (time.perf_counter() - started) * 1000,
        extra={"task": name, "counts": counts},
    )
    return counts
