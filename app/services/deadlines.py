"""Deadlines, stalled jobs and ETAs.

The deadline rule itself is the database function `job_deadline`, which `apply_events` applies
with every event, and job creation to a new job: the earliest of the configuration version's
timeouts, or, without a step timeout, the step's wait learnt from the version's history. That
wait is one row of `job_step_timings` per step, refreshed here by the `sweep_deadlines` task:
an event reads one row instead of aggregating the history, which grows without bound.

The sweep marks open jobs past their deadline `stalled`, in bounded batches through the partial
index on `deadline_at`, skipping rows another sweep (or an event) holds.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Float, case, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import (
    Job,
    JobStatus,
    JobStepCompletion,
    JobStepTiming,
    WebhookEventType,
)
from app.services.jobs import JobState
from app.services.webhooks import enqueue
from config import config

OPEN = (JobStatus.PENDING, JobStatus.RUNNING)
# A refresh also looks again at jobs changed this long before the previous one: an event whose
# transaction was still open then is seen now.
REFRESH_OVERLAP = timedelta(hours=1)
# The timings are computed again at most this often (the sweep runs every minute): each refresh
# sorts the durations of every changed version, and history moves slowly.
REFRESH_INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True)
class LearntWait:
    """How a step's wait is learnt from its recorded durations (the settings)."""

    quantile: float
    factor: float
    floor_seconds: float
    min_samples: int

    @classmethod
    def from_settings(cls) -> "LearntWait":
        settings = config.settings
        return cls(
            quantile=settings.deadline_step_quantile,
            factor=settings.deadline_step_factor,
            floor_seconds=settings.deadline_step_floor_seconds,
            min_samples=settings.deadline_min_samples,
        )


def refresh_step_timings(session: Session, *, now: datetime, policy: LearntWait) -> int:
    """Compute again the timings of every step of the configuration versions whose jobs changed
    since the previous refresh (all of them the first time), unless that was less than
    REFRESH_INTERVAL ago; return how many steps."""
    previous = session.scalar(select(func.max(JobStepTiming.refreshed_at)))
    if previous is not None and now - previous < REFRESH_INTERVAL:
        return 0
    changed = select(Job.configuration_id).distinct()
    if previous is not None:
        changed = changed.where(Job.updated_at >= previous - REFRESH_OVERLAP)
    seconds = JobStepCompletion.seconds_since_previous
    samples = func.count()
    learnt = func.percentile_cont(policy.quantile).within_group(seconds)
    timings = (
        select(
            JobStepCompletion.step_id,
            JobStepCompletion.configuration_id,
            samples,
            func.percentile_cont(0.5).within_group(seconds),
            func.percentile_cont(0.9).within_group(seconds),
            case(
                (
                    samples >= policy.min_samples,
                    func.greatest(learnt * policy.factor, literal(policy.floor_seconds, Float)),
                ),
            ),
            literal(now),
        )
        .where(JobStepCompletion.configuration_id.in_(changed.scalar_subquery()))
        .group_by(JobStepCompletion.step_id, JobStepCompletion.configuration_id)
    )
    columns = [
        "step_id",
        "configuration_id",
        "sample_count",
        "median_seconds",
        "p90_seconds",
        "wait_seconds",
        "refreshed_at",
    ]
    statement = insert(JobStepTiming).from_select(columns, timings)
    statement = statement.on_conflict_do_update(
        index_elements=[JobStepTiming.step_id],
        set_={name: statement.excluded[name] for name in columns[2:]},
    )
    result = session.execute(statement)
    return cast(CursorResult[Any], result).rowcount


def sweep_deadlines(session: Session, *, now: datetime, limit: int) -> int:
    """Mark up to `limit` open jobs past their deadline `stalled`, queueing their `job.stalled`
    notifications in the same transaction; return how many."""
    # Materialized: as a subquery of the UPDATE, PostgreSQL may run it again for each row it
    # joins, and each run takes the next `limit` rows.
    overdue = (
        select(Job.id)
        .where(Job.status.in_(OPEN), Job.deadline_at.is_not(None), Job.deadline_at <= now)
        .order_by(Job.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("overdue")
        .prefix_with("MATERIALIZED")
    )
    stalled = session.scalars(
        update(Job)
        .where(Job.id == overdue.c.id, Job.status.in_(OPEN))
        .values(status=JobStatus.STALLED, updated_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).all()
    enqueue(session, job_ids=stalled, event_type=WebhookEventType.JOB_STALLED, at=now)
    return len(stalled)


@dataclass(frozen=True)
class Estimate:
    eta: datetime | None
    eta_p90: datetime | None


UNKNOWN = Estimate(None, None)
ESTIMATED = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.STALLED)


def estimate(state: JobState, *, now: datetime, min_samples: int) -> Estimate:
    """Now plus the median (and the p90) recorded durations of the job's remaining steps;
    unknown for a finished job, or when a remaining step has fewer than `min_samples`."""
    if state.job.status not in ESTIMATED:
        return UNKNOWN
    timings = [item.timing for item in state.steps if item.completion is None]
    known = [
        timing for timing in timings if timing is not None and timing.sample_count >= min_samples
    ]
    if len(known) < len(timings):
        return UNKNOWN
    median = sum(timing.median_seconds for timing in known)
    p90 = sum(timing.p90_seconds for timing in known)
    return Estimate(now + timedelta(seconds=median), now + timedelta(seconds=p90))
