"""The steps funnel from rollups: its counts per cohort, from the funnel rollups where they are
valid and from the job rows, step completions and step errors (live) for the rest; and rolling
them up.

The funnel rolls up per day and per month of job creation (UTC); its ranges are UTC instants.
Month rows exist per customer and for all customers (customer ALL_CUSTOMERS), day rows for all
customers only: one customer's days are few enough to read live. The completions keep the
histogram's buckets (app.internal.quantiles), so the quantiles keep their accuracy.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Select,
    Subquery,
    cast,
    column,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.types import NullType

from app.internal.periods import Interval, next_period, period_start
from app.models import (
    ALL_CUSTOMERS,
    FunnelErrorRollup,
    FunnelJobRollup,
    FunnelRollupMark,
    FunnelStepRollup,
    Job,
    JobStepCompletion,
    JobStepError,
    Level,
)
from app.services.rollups.sql import DAY, ceil_to, floor_to, for_each, moments, ranges, rolled_until

# The key of a funnel rollup row, before the measure's own keys.
_FUNNEL_KEY = ("configuration_id", "level", "customer_id", "period_start")


@dataclass(frozen=True)
class Cohort:
    """The jobs a funnel follows: of one configuration version, created in [start, end), of one
    customer or of every one (None)."""

    configuration_id: int
    start: datetime
    end: datetime
    customer_id: int | None


@dataclass(frozen=True)
class _Measure:
    """One thing the funnel counts per cohort: in which table, by which keys, and its sums
    (a live expression, and the rollup column that holds it summed)."""

    source: Any
    keys: tuple[str, ...]
    sums: tuple[tuple[str, Callable[[Any], ColumnElement[Any]]], ...]
    rollup: Any
    # The last key and the one sum are kept as a histogram: two arrays in one row per other
    # keys, the key's values in order and their sums.
    histogram: str | None = None

    def created_at(self) -> InstrumentedAttribute[datetime]:
        return self.source.created_at if self.source is Job else self.source.job_created_at


JOBS = _Measure(Job, (), (("jobs", lambda source: func.count()),), FunnelJobRollup)
COMPLETIONS = _Measure(
    JobStepCompletion,
    ("step_id", "seconds_bucket"),
    (("completions", lambda source: func.count()),),
    FunnelStepRollup,
    histogram="seconds_buckets",
)
ERRORS = _Measure(
    JobStepError,
    ("step_id",),
    (
        ("errors", lambda source: func.sum(source.error_count)),
        ("failed_only", lambda source: func.count().filter(source.step_completed.is_(False))),
    ),
    FunnelErrorRollup,
)
FUNNEL_MEASURES = (JOBS, COMPLETIONS, ERRORS)


def floor_month(moment: datetime) -> datetime:
    return datetime.combine(period_start(moment.date(), Interval.MONTH), time(), UTC)


def month_after(moment: datetime) -> datetime:
    return datetime.combine(next_period(moment.date(), Interval.MONTH), time(), UTC)


@dataclass(frozen=True)
class _FunnelPlan:
    """Which parts of a cohort's range come from which rows, decided in SQL (from the rollup
    state and the marks, in the statement's own snapshot): month rows for whole months that are
    rolled up and unmarked; day rows (all customers only) for the other whole days that are;
    live rows for the rest."""

    months: Any  # CTE (period_start)
    days: Any  # CTE (period_start)
    live: Any  # CTE (lo, hi)


def _funnel_plan(cohort: Cohort) -> _FunnelPlan:
    first_day, last_day = ceil_to(cohort.start, DAY), floor_to(cohort.end, DAY)
    if first_day >= last_day:
        first_day = last_day = cohort.start
    days: list[datetime] = []
    months: list[datetime | None] = []
    day = first_day
    while day < last_day:
        month = datetime.combine(period_start(day.date(), Interval.MONTH), time(), UTC)
        whole = month >= first_day and month_after(month) <= last_day
        days.append(day)
        months.append(month if whole else None)
        day += DAY
    rolled = func.coalesce(rolled_until(), literal(datetime.min.replace(tzinfo=UTC)))
    marked = (
        select(FunnelRollupMark.day)
        .where(
            FunnelRollupMark.configuration_id == cohort.configuration_id,
            FunnelRollupMark.day >= first_day,
            FunnelRollupMark.day < last_day,
        )
        .cte("marked")
    )
    candidates = (
        select(
            func.unnest(moments("days", days), moments("months", months))
            .table_valued(
                column("day", DateTime(timezone=True)), column("month", DateTime(timezone=True))
            )
            .render_derived()
        )
    ).cte("candidates")
    good_months = (
        select(candidates.c.month.label("period_start"))
        .where(candidates.c.month.is_not(None))
        .group_by(candidates.c.month)
        .having(
            _month_after_sql(candidates.c.month) <= rolled,
            ~exists().where(
                marked.c.day >= candidates.c.month,
                marked.c.day < _month_after_sql(candidates.c.month),
            ),
        )
        .cte("good_months")
    )
    outside_months = or_(
        candidates.c.month.is_(None),
        candidates.c.month.not_in(select(good_months.c.period_start)),
    )
    if cohort.customer_id is None:
        good_days = select(candidates.c.day.label("period_start")).where(
            outside_months,
            candidates.c.day + DAY <= rolled,
            candidates.c.day.not_in(select(marked.c.day)),
        )
    else:  # one customer's days are read live
        good_days = select(candidates.c.day.label("period_start")).where(false())
    good_days_cte = good_days.cte("good_days")
    live = union_all(
        ranges((cohort.start, first_day), (last_day, cohort.end)),
        select(candidates.c.day.label("lo"), (candidates.c.day + DAY).label("hi")).where(
            outside_months, candidates.c.day.not_in(select(good_days_cte.c.period_start))
        ),
    ).cte("live")
    return _FunnelPlan(good_months, good_days_cte, live)


def _month_after_sql(month: ColumnElement[datetime]) -> ColumnElement[datetime]:
    """The next month's start, in UTC whatever the session's time zone."""
    return func.timezone(
        "UTC", func.timezone("UTC", month) + text("interval '1 month'"), type_=DateTime(True)
    )


def funnel_counts(session: Session, cohort: Cohort, measure: _Measure) -> list[tuple[Any, ...]]:
    """The measure's sums for the cohort by its keys, from rollups where valid, else live."""
    plan = _funnel_plan(cohort)
    rollup, source = measure.rollup, measure.source
    scope_id = ALL_CUSTOMERS if cohort.customer_id is None else cohort.customer_id

    def rolled(level: Level, periods: Any) -> Select[Any]:
        of_period = select(
            *(getattr(rollup, key) for key in measure.keys[: len(measure.keys) - bool(histogram)]),
            *((getattr(rollup, histogram),) if histogram else ()),
            *(getattr(rollup, name).label(name) for name, _ in measure.sums),
        ).where(
            rollup.configuration_id == cohort.configuration_id,
            rollup.level == level,
            rollup.customer_id == scope_id,
            rollup.period_start == periods.c.period_start,
        )
        return for_each(periods, of_period, f"{level.value}_rows")

    histogram = measure.histogram
    created_at = measure.created_at()
    of_range = (
        select(
            *(getattr(source, key).label(key) for key in measure.keys),
            *(expression(source).label(name) for name, expression in measure.sums),
        )
        .where(
            created_at >= plan.live.c.lo,
            created_at < plan.live.c.hi,
            source.configuration_id == cohort.configuration_id,
            true() if cohort.customer_id is None else source.customer_id == cohort.customer_id,
        )
        .group_by(*(getattr(source, key) for key in measure.keys))
    )
    live = for_each(plan.live, of_range, "live_rows")
    if histogram is not None:
        live = _as_histograms(live.subquery("live"), measure, keys=measure.keys[:-1])
    parts = union_all(
        rolled(Level.MONTH, plan.months), rolled(Level.DAY, plan.days), live
    ).subquery("parts")
    if histogram is not None:
        # A few rows per step, each a histogram: merged here rather than unnested in SQL,
        # where a hash aggregate of every bucket of every period costs several times more.
        # The arrays as the driver reads them (lists of ints), with no per-item conversion.
        arrays = [type_coerce(column, NullType()) for column in parts.c]
        merged: defaultdict[tuple[Any, ...], defaultdict[int, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        for *keys, buckets, counts in session.execute(select(*arrays)):
            histogram_of = merged[tuple(keys)]
            for bucket, count in zip(buckets, counts, strict=True):
                histogram_of[bucket] += count
        return [
            (*keys, bucket, count)
            for keys, histogram_of in merged.items()
            for bucket, count in histogram_of.items()
        ]
    totals = select(
        *(parts.c[key] for key in measure.keys),
        *(func.sum(parts.c[name]).label(name) for name, _ in measure.sums),
    ).group_by(*(parts.c[key] for key in measure.keys))
    return [tuple(row) for row in session.execute(totals)]


def roll_funnel(
    session: Session,
    *,
    level: Level,
    start: datetime,
    end: datetime,
    configuration_ids: Sequence[int],
) -> None:
    """Count the funnel of the jobs created in [start, end) (whole periods of `level`) again,
    per configuration version: per customer and for all at month level, for all at day level."""
    for measure in FUNNEL_MEASURES:
        rollup, source = measure.rollup, measure.source
        created_at = measure.created_at()
        session.execute(
            delete(rollup).where(
                rollup.configuration_id.in_(configuration_ids),
                rollup.level == level,
                rollup.period_start >= start,
                rollup.period_start < end,
            )
        )
        period = func.date_trunc(level.value, created_at, "UTC", type_=DateTime(True))
        keys = [source.configuration_id, period, *(getattr(source, key) for key in measure.keys)]
        grouping = (
            [func.grouping_sets(tuple_(*keys, source.customer_id), tuple_(*keys))]
            if level == Level.MONTH
            else keys
        )
        customer = (
            func.coalesce(source.customer_id, ALL_CUSTOMERS)
            if level == Level.MONTH
            else literal(ALL_CUSTOMERS, BigInteger)
        )
        counted = (
            select(
                source.configuration_id.label("configuration_id"),
                cast(literal(level.value), rollup.level.type).label("level"),
                customer.label("customer_id"),
                period.label("period_start"),
                *(getattr(source, key).label(key) for key in measure.keys),
                *(expression(source).label(name) for name, expression in measure.sums),
            )
            .where(
                source.configuration_id.in_(configuration_ids),
                created_at >= start,
                created_at < end,
            )
            .group_by(*grouping)
        )
        if measure.histogram is not None:
            counted = _as_histograms(
                counted.subquery("counted"),
                measure,
                keys=[*_FUNNEL_KEY, *measure.keys[:-1]],
            )
        session.execute(
            insert(rollup).from_select(
                [column.name for column in counted.selected_columns], counted
            )
        )


def _as_histograms(counted: Subquery, measure: _Measure, *, keys: Sequence[str]) -> Select[Any]:
    """Counted rows (one per value of the measure's last key) as one row per `keys`, with the
    last key's values in order and their sums as two arrays."""
    (name, _), last = measure.sums[0], measure.keys[-1]
    others = [counted.c[key] for key in keys]
    return select(
        *others,
        func.array_agg(aggregate_order_by(counted.c[last], counted.c[last])).label(
            measure.histogram or last
        ),
        func.array_agg(aggregate_order_by(counted.c[name], counted.c[last])).label(name),
    ).group_by(*others)
