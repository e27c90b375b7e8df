"""Billing's usage from rollups: the facts billing counts, from the usage rollups where they are
valid and from the job rows and step completions (live) for the rest; and rolling them up.

Usage rolls up per quarter hour, hour and day (UTC). A quarter hour lies in one local day of
every zone whose offset is a whole number of quarter hours, so it falls whole into one period
of any interval in any of those zones; an hour does so for whole-hour zones, a day for UTC. A
read uses the coarsest grain that does for its zone and range, and takes live any bucket that
straddles a local midnight (offsets like Monrovia's -0:44:30 before 1972: `uneven_buckets`).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    SQLColumnExpression,
    Subquery,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    select,
    union,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.periods import uneven_buckets
from app.models import (
    Job,
    JobConfiguration,
    JobStatus,
    JobStepCompletion,
    UsageLevel,
    UsageRollup,
    UsageRollupMark,
)
from app.services.rollups.sql import (
    EPOCH,
    ceil_to,
    floor_to,
    for_each,
    moments,
    ranges,
    rolled_until,
)

GRAIN = timedelta(minutes=15)


@dataclass(frozen=True)
class BillingScope:
    """Which rows a report counts: a time range, a customer or all, a configuration tag or all."""

    start: datetime
    end: datetime
    customer_id: int | None
    tag: str | None

    def where(
        self,
        customer_id: InstrumentedAttribute[int] | ColumnElement[int],
        configuration_id: InstrumentedAttribute[int] | ColumnElement[int],
    ) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.customer_id is not None:
            clauses.append(customer_id == self.customer_id)
        if self.tag is not None:
            clauses.append(
                configuration_id.in_(
                    select(JobConfiguration.id).where(JobConfiguration.tag == self.tag)
                )
            )
        return clauses

    def during(
        self,
        moment: InstrumentedAttribute[Any],
        customer_id: InstrumentedAttribute[int],
        configuration_id: InstrumentedAttribute[int],
    ) -> list[ColumnElement[bool]]:
        return [moment >= self.start, moment < self.end, *self.where(customer_id, configuration_id)]


USAGE_FIGURES = (
    "jobs_started",
    "jobs_completed",
    "jobs_failed",
    "steps_completed",
    "points",
    "cost",
)


def _facts(
    customer_id: InstrumentedAttribute[int],
    configuration_id: InstrumentedAttribute[int],
    moment: InstrumentedAttribute[Any],
    *,
    counts: str,
    points: InstrumentedAttribute[int] | None = None,
    cost: InstrumentedAttribute[Decimal] | None = None,
) -> list[SQLColumnExpression[Any]]:
    """The columns of one kind of fact: its customer and configuration version, its time, 1 in
    the figure it counts."""
    figures: dict[str, SQLColumnExpression[Any]] = {
        name: literal(0, Integer) for name in USAGE_FIGURES
    }
    figures[counts] = literal(1, Integer)
    if points is not None:
        figures["points"] = points
    if cost is not None:
        figures["cost"] = cost
    return [
        customer_id.label("customer_id"),
        configuration_id.label("configuration_id"),
        moment.label("at"),
        *(value.label(name) for name, value in figures.items()),
    ]


def _live_usage(ranges: Subquery, scope: BillingScope) -> list[Select[Any]]:
    """What billing counts, from the job rows and the step completions, in `ranges` (lo, hi)."""

    def within(moment: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
        return [moment >= ranges.c.lo, moment < ranges.c.hi]

    completion = JobStepCompletion
    started = select(
        *_facts(Job.customer_id, Job.configuration_id, Job.created_at, counts="jobs_started")
    ).where(*within(Job.created_at), *scope.where(Job.customer_id, Job.configuration_id))
    completed = select(
        *_facts(Job.customer_id, Job.configuration_id, Job.completed_at, counts="jobs_completed")
    ).where(*within(Job.completed_at), *scope.where(Job.customer_id, Job.configuration_id))
    steps = select(
        *_facts(
            completion.customer_id,
            completion.configuration_id,
            completion.completed_at,
            counts="steps_completed",
            points=completion.points,
            cost=completion.cost,
        )
    ).where(
        *within(completion.completed_at),
        *scope.where(completion.customer_id, completion.configuration_id),
    )
    return [
        for_each(ranges, started, "started"),
        for_each(ranges, completed, "completed"),
        for_each(ranges, steps, "steps"),
    ]


# The usage rollups' grains, coarsest first.
USAGE_LEVELS = (
    (UsageLevel.DAY, timedelta(days=1)),
    (UsageLevel.HOUR, timedelta(hours=1)),
    (UsageLevel.QUARTER_HOUR, GRAIN),
)


def _usage_level(start: datetime, end: datetime, zone: ZoneInfo) -> tuple[UsageLevel, timedelta]:
    """The coarsest grain whose buckets in [start, end) each lie in one local day of `zone`;
    quarter hours if none (their exceptions are read live)."""
    for level, grain in USAGE_LEVELS[:-1]:
        if not uneven_buckets(start, end, zone, grain):
            return level, grain
    return USAGE_LEVELS[-1]


def usage_facts(scope: BillingScope, zone: ZoneInfo) -> Subquery:
    """Every fact billing counts in the scope, a row each (customer_id, at, and the figures),
    where a rollup row stands for the facts of its bucket at its start: the rolled-up buckets
    inside the range that are valid, live facts for the rest."""
    level, grain = _usage_level(scope.start, scope.end, zone)
    middle_start, middle_end = ceil_to(scope.start, grain), floor_to(scope.end, grain)
    if middle_start >= middle_end:
        middle_start = middle_end = scope.start
    # The middle's part that is rolled up: [middle_start, rolled_end).
    rolled_end = func.least(
        middle_end, func.greatest(middle_start, func.coalesce(rolled_until(), middle_start))
    )
    marked = func.date_bin(grain, UsageRollupMark.bucket_at, EPOCH, type_=DateTime(True))
    stale_buckets = [
        select(marked.label("bucket_at"))
        .distinct()  # a bucket may have many marks
        .where(marked >= middle_start, marked < rolled_end)
    ]
    if uneven := uneven_buckets(middle_start, middle_end, zone, grain):
        listed = (
            func.unnest(moments("uneven", uneven))
            .table_valued(column("bucket_at", DateTime(timezone=True)))
            .render_derived()
        )
        stale_buckets.append(select(listed.c.bucket_at).where(listed.c.bucket_at < rolled_end))
    stale = union(*stale_buckets).cte("stale")
    live = union_all(
        ranges((scope.start, middle_start), (middle_end, scope.end)),
        select(rolled_end.label("lo"), literal(middle_end, DateTime(timezone=True)).label("hi")),
        select(stale.c.bucket_at.label("lo"), (stale.c.bucket_at + grain).label("hi")),
    ).subquery("live")
    rolled = select(
        UsageRollup.customer_id,
        UsageRollup.configuration_id,
        UsageRollup.bucket_at.label("at"),
        *(
            literal(0, Integer).label(name)
            if name == "jobs_failed"
            else getattr(UsageRollup, name).label(name)
            for name in USAGE_FIGURES
        ),
    ).where(
        UsageRollup.level == level,
        UsageRollup.bucket_at >= middle_start,
        UsageRollup.bucket_at < rolled_end,
        UsageRollup.bucket_at.not_in(select(stale.c.bucket_at)),
        *scope.where(UsageRollup.customer_id, UsageRollup.configuration_id),
    )
    # A job counts as failed in the period of its last event while it is failed: it is
    # current state, read live from a partial index of failed jobs (few).
    failed = select(
        *_facts(Job.customer_id, Job.configuration_id, Job.last_event_at, counts="jobs_failed")
    ).where(
        *scope.during(Job.last_event_at, Job.customer_id, Job.configuration_id),
        Job.status == JobStatus.FAILED,
    )
    return union_all(rolled, *_live_usage(live, scope), failed).subquery("facts")


_ROLLED_UP = [name for name in USAGE_FIGURES if name != "jobs_failed"]


def roll_usage(session: Session, *, start: datetime, end: datetime) -> None:
    """Sum the usage of the quarter hours in [start, end) (aligned) again from the live facts,
    then the hours and days that hold them from the quarter hours and hours."""
    session.execute(
        delete(UsageRollup).where(
            UsageRollup.level == UsageLevel.QUARTER_HOUR,
            UsageRollup.bucket_at >= start,
            UsageRollup.bucket_at < end,
        )
    )
    facts = union_all(
        *_live_usage(ranges((start, end)).subquery("fixed"), BillingScope(start, end, None, None))
    ).subquery("facts")
    _insert_usage(session, UsageLevel.QUARTER_HOUR, GRAIN, facts)
    finer = UsageLevel.QUARTER_HOUR
    for level, grain in reversed(USAGE_LEVELS[:-1]):
        low, high = floor_to(start, grain), ceil_to(end, grain)
        session.execute(
            delete(UsageRollup).where(
                UsageRollup.level == level,
                UsageRollup.bucket_at >= low,
                UsageRollup.bucket_at < high,
            )
        )
        parts = (
            select(
                UsageRollup.customer_id,
                UsageRollup.configuration_id,
                UsageRollup.bucket_at.label("at"),
                *(getattr(UsageRollup, name).label(name) for name in _ROLLED_UP),
            )
            .where(
                UsageRollup.level == finer,
                UsageRollup.bucket_at >= low,
                UsageRollup.bucket_at < high,
            )
            .subquery("parts")
        )
        _insert_usage(session, level, grain, parts)
        finer = level


def _insert_usage(session: Session, level: UsageLevel, grain: timedelta, facts: Subquery) -> None:
    """Rollup rows of `level`: the facts (or finer rollups) summed per bucket of `grain`."""
    bucket = func.date_bin(grain, facts.c.at, EPOCH, type_=DateTime(True))
    session.execute(
        insert(UsageRollup).from_select(
            ["level", "bucket_at", "customer_id", "configuration_id", *_ROLLED_UP],
            select(
                cast(literal(level.value), UsageRollup.level.type),
                bucket,
                facts.c.customer_id,
                facts.c.configuration_id,
                *(func.sum(facts.c[name]) for name in _ROLLED_UP),
            ).group_by(bucket, facts.c.customer_id, facts.c.configuration_id),
        )
    )
