"""The job contract's per-step records (step completions with their timing, step error counts)
as stored, and the same worked out the slow way from the events and completions, for tests that
hold the one to the other."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Event, EventKind, Job, JobStepCompletion, JobStepError


def step_errors_table(db: Session, job_ids: Iterable[int]) -> dict[tuple[int, int], Any]:
    return {
        (row.job_id, row.step_id): (row.error_count, row.first_error_at, row.last_error_at)
        for row in db.scalars(select(JobStepError).where(JobStepError.job_id.in_(job_ids)))
    }


def funnel_facts(db: Session, job_ids: Iterable[int]) -> dict[str, Any]:
    """What the funnel reads beside the counts: each completion's job creation time and seconds
    since the job's previous completion, and whether each errored step was completed too."""
    return {
        "timed": {
            (row.job_id, row.step_id): (row.job_created_at, round(row.seconds_since_previous, 6))
            for row in db.scalars(
                select(JobStepCompletion).where(JobStepCompletion.job_id.in_(job_ids))
            )
        },
        "errors": {
            (row.job_id, row.step_id): (row.job_created_at, row.step_completed)
            for row in db.scalars(select(JobStepError).where(JobStepError.job_id.in_(job_ids)))
        },
    }


def funnel_facts_worked_out(db: Session, job_ids: Iterable[int]) -> dict[str, Any]:
    """The same, worked out the slow way from the completions and the jobs."""
    jobs = {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(job_ids)))}
    completions = db.scalars(
        select(JobStepCompletion)
        .where(JobStepCompletion.job_id.in_(job_ids))
        .order_by(
            JobStepCompletion.job_id, JobStepCompletion.completed_at, JobStepCompletion.step_id
        )
    ).all()
    timed: dict[tuple[int, int], Any] = {}
    previous: dict[int, datetime] = {}
    for row in completions:
        since = previous.get(row.job_id, jobs[row.job_id].created_at)
        seconds = (row.completed_at - since).total_seconds()
        timed[(row.job_id, row.step_id)] = (jobs[row.job_id].created_at, round(seconds, 6))
        previous[row.job_id] = row.completed_at
    completed = {(row.job_id, row.step_id) for row in completions}
    errors = {
        (row.job_id, row.step_id): (
            jobs[row.job_id].created_at,
            (row.job_id, row.step_id) in completed,
        )
        for row in db.scalars(select(JobStepError).where(JobStepError.job_id.in_(job_ids)))
    }
    return {"timed": timed, "errors": errors}


def step_errors_from_events(
    db: Session, job_ids: Iterable[int]
) -> dict[tuple[int, int | None], Any]:
    """What job_step_errors must hold, worked out the slow way from the events."""
    at = func.coalesce(Event.occurred_at, Event.received_at)
    rows = db.execute(
        select(Event.job_id, Event.step_id, func.count(), func.min(at), func.max(at))
        .where(Event.job_id.in_(job_ids), Event.kind == EventKind.ERROR, Event.step_id.is_not(None))
        .group_by(Event.job_id, Event.step_id)
    )
    return {(job_id, step_id): (count, first, last) for job_id, step_id, count, first, last in rows}
