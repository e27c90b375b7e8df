"""Rollups of closed periods: billing's usage and the steps funnel, summed ahead by the scheduled
task `roll_up_periods`, so that a read over a year adds up a few thousand rows instead of
millions. Reads combine the rollups, where they are valid, with the per-step tables (the live
facts) for the rest: the range's partial ends, what is not rolled up yet, and what changed since.

- A period is *closed* once it ended CLOSE_AFTER ago (`rollup_state.closed_until`). A change to
  a closed period (a late event, a step moved earlier) appends a mark in the writer's own
  transaction (the triggers under app/models/sql/triggers/); reads take a marked
  period live until the task rolls it up again and deletes its marks.
- The task closes the periods, waits until every transaction that could have written without
  seeing the new `closed_until` has ended (`wait_for_writers`), then rolls forward
  (`rolled_until`) a day at a time and rolls marked periods again. Each step is one short
  transaction; a read is one statement, so it sees a rollup and its marks as of one moment.
- What each rollup holds, and how reads combine it with the live facts: usage.py and funnel.py
  here; sql.py holds what both share.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.models import (
    FunnelErrorRollup,
    FunnelJobRollup,
    FunnelRollupMark,
    FunnelStepRollup,
    Job,
    JobConfiguration,
    JobStepCompletion,
    Level,
    RollupState,
    UsageRollup,
    UsageRollupMark,
)
from app.services.rollups.funnel import floor_month, month_after, roll_funnel
from app.services.rollups.sql import DAY, floor_to
from app.services.rollups.usage import GRAIN, roll_usage

CLOSE_AFTER = timedelta(days=1)
ROLL_UP_STATEMENT_TIMEOUT_MS = 120_000
# The tables whose writers mark closed periods (see wait_for_writers).
MARKED_TABLES = ("jobs", "job_step_completions", "job_step_errors")


def _locked_state(session: Session) -> RollupState:
    """The state row, read afresh and locked: one roll-up transaction at a time. (The
    migration makes it; without it, as after a TRUNCATE, nothing is rolled up or closed.)"""
    # A roll-up statement sums a day, or a month for the funnel, of every customer: not a
    # request, so not held to a request's time limit, but to the worker's (5 minutes).
    session.execute(text(f"SET LOCAL statement_timeout = {ROLL_UP_STATEMENT_TIMEOUT_MS}"))
    session.execute(postgresql.insert(RollupState).values(id=1).on_conflict_do_nothing())
    statement = select(RollupState).with_for_update().execution_options(populate_existing=True)
    return session.execute(statement).scalar_one()


def close_periods(session: Session, *, now: datetime) -> datetime:
    """Close the UTC days that ended CLOSE_AFTER ago: from now on their writers mark them.
    Returns the new `closed_until`; it never moves back."""
    horizon = floor_to(now - CLOSE_AFTER, DAY)
    state = _locked_state(session)
    if state.closed_until is None or state.closed_until < horizon:
        state.closed_until = horizon
    session.flush()
    return state.closed_until


def wait_for_writers(session: Session, *, table: str, timeout: timedelta) -> None:
    """Wait until every transaction writing `table` now has ended (a SHARE lock waits for them,
    and is released at once): one that read `closed_until` before the last close has then
    committed, so what it wrote is in every later snapshot, and each later one sees the new
    value and marks. Raises OperationalError (lock_timeout) past `timeout`."""
    milliseconds = max(int(timeout.total_seconds() * 1000), 1)
    session.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
    session.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))


def _next_data(session: Session, after: datetime) -> datetime | None:
    """The earliest moment at or after `after` that anything rolled up happened."""
    firsts = [
        select(func.min(moment)).where(moment >= after).scalar_subquery()
        for moment in (Job.created_at, Job.completed_at, JobStepCompletion.completed_at)
    ]
    return session.scalar(select(func.least(*firsts)))


def roll_forward(session: Session, *, until: datetime) -> datetime | None:
    """Roll up the next closed day (or the stretch of empty days) before `until`, the
    `closed_until` that `wait_for_writers` made safe. Returns the new `rolled_until`, None when
    there was nothing left to roll."""
    state = _locked_state(session)
    start = state.rolled_until
    if start is not None and start >= until:
        return None
    found = _next_data(session, start or datetime.min.replace(tzinfo=UTC))
    if start is None:
        start = floor_to(min(found or until, until), DAY)
    end = min(start + DAY, until)
    if found is None or found >= end:  # nothing in [start, end): skip to the next data
        end = min(floor_to(found, DAY) if found is not None else until, until)
        if start != floor_month(start):
            end = min(end, month_after(floor_month(start)))
        end = max(end, min(start + DAY, until))
    configurations = list(session.scalars(select(JobConfiguration.id)))
    roll_usage(session, start=start, end=end)
    roll_funnel(session, level=Level.DAY, start=start, end=end, configuration_ids=configurations)
    if end == floor_month(end):  # a month is over
        month = floor_month(end - DAY)
        roll_funnel(
            session, level=Level.MONTH, start=month, end=end, configuration_ids=configurations
        )
    state.rolled_until = end
    session.flush()
    return end


def roll_marked(session: Session, *, limit: int) -> int:
    """Roll up again up to `limit` marked quarter hours and funnel days, and delete their
    marks, in one transaction; returns how many periods it rolled."""
    state = _locked_state(session)
    rolled_until = state.rolled_until or datetime.min.replace(tzinfo=UTC)
    buckets = _take_marks(session, UsageRollupMark, [UsageRollupMark.bucket_at], limit)
    for (bucket,) in buckets:
        if bucket < rolled_until:
            roll_usage(session, start=bucket, end=bucket + GRAIN)
    days = _take_marks(
        session, FunnelRollupMark, [FunnelRollupMark.configuration_id, FunnelRollupMark.day], limit
    )
    months: set[tuple[int, datetime]] = set()
    for configuration_id, day in days:
        if day + DAY <= rolled_until:
            roll_funnel(
                session,
                level=Level.DAY,
                start=day,
                end=day + DAY,
                configuration_ids=[configuration_id],
            )
        month = floor_month(day)
        if month_after(month) <= rolled_until:
            months.add((configuration_id, month))
    for configuration_id, month in sorted(months):
        roll_funnel(
            session,
            level=Level.MONTH,
            start=month,
            end=month_after(month),
            configuration_ids=[configuration_id],
        )
    return len(buckets) + len(days)


def _take_marks(
    session: Session, mark: Any, key: list[InstrumentedAttribute[Any]], limit: int
) -> list[tuple[Any, ...]]:
    """Delete the marks of up to `limit` distinct periods; return those periods."""
    periods = select(*key).distinct().order_by(*key).limit(limit).subquery("periods")
    taken = delete(mark).where(tuple_(*key).in_(select(*periods.c))).returning(*key)
    return sorted({tuple(row) for row in session.execute(taken)})  # a row per mark deleted


def forget(session: Session) -> None:
    """Drop every rollup and mark: the next run rolls everything up again. For writers that
    skip the triggers (a bulk load with session_replication_role = replica)."""
    for model in (
        UsageRollup,
        UsageRollupMark,
        FunnelJobRollup,
        FunnelStepRollup,
        FunnelErrorRollup,
        FunnelRollupMark,
    ):
        session.execute(delete(model))
    session.execute(update(RollupState).values(closed_until=None, rolled_until=None))
