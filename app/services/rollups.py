"""Rollups of closed periods: billing's usage and the steps funnel, summed ahead by the scheduled
task `roll_up_periods`, so that a read over a year adds up a few thousand rows instead of
millions. Reads combine the rollups, where they are valid, with the per-step tables (the live
facts) for the rest: the range's partial ends, what is not rolled up yet, and what changed since.

- A period is *closed* once it ended CLOSE_AFTER ago (`rollup_state.closed_until`). A change to
  a closed period (a late event, a step moved earlier) appends a mark in the writer's own
  transaction (triggers of the migration "rollups of closed periods"); reads take a marked
  period live until the task rolls it up again and deletes its marks.
- The task closes the periods, waits until every transaction that could have written without
  seeing the new `closed_until` has ended (`wait_for_writers`), then rolls forward
  (`rolled_until`) a day at a time and rolls marked periods again. Each step is one short
  transaction; a read is one statement, so it sees a rollup and its marks as of one moment.
- Usage rolls up per quarter hour (UTC): a quarter hour lies in one local day of every zone
  whose offset is a whole number of quarter hours, so it falls whole into one period of any
  interval in any of those zones. Where a quarter hour straddles a local midnight (offsets like
  Monrovia's -0:44:30 before 1972), the read takes it live (`uneven_buckets`).
- The funnel rolls up per day and per month of job creation (UTC); its ranges are UTC instants.
  Month rows exist per customer and for all customers (customer ALL_CUSTOMERS), day rows for all
  customers only: one customer's days are few enough to read live. Both keep the histogram's
  buckets (app.internal.quantiles), so the quantiles keep their accuracy.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    DateTime,
    Integer,
    ScalarSelect,
    Select,
    SQLColumnExpression,
    Subquery,
    bindparam,
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
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.periods import Interval, next_period, period_start, uneven_buckets
from app.models import (
    ALL_CUSTOMERS,
    FunnelErrorRollup,
    FunnelJobRollup,
    FunnelRollupMark,
    FunnelStepRollup,
    Job,
    JobConfiguration,
    JobStatus,
    JobStepCompletion,
    JobStepError,
    Level,
    RollupState,
    UsageLevel,
    UsageRollup,
    UsageRollupMark,
)

GRAIN = timedelta(minutes=15)
CLOSE_AFTER = timedelta(days=1)
DAY = timedelta(days=1)
# The tables whose writers mark closed periods (see wait_for_writers).
MARKED_TABLES = ("jobs", "job_step_completions", "job_step_errors")


# Where buckets are counted from (a Saturday midnight, UTC: days and shorter grains align).
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _floor(moment: datetime, grain: timedelta) -> datetime:
    return moment - (moment - _EPOCH) % grain


def _ceil(moment: datetime, grain: timedelta) -> datetime:
    floor = _floor(moment, grain)
    return floor if floor == moment else floor + grain


# --- Usage --------------------------------------------------------------------------------


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


def _for_each(outer: Any, inner: Select[Any], name: str) -> Select[Any]:
    """`inner`, which refers to `outer`'s columns, run once per row of `outer`: a LATERAL
    subquery with OFFSET 0, which the planner may not merge into a join, so that each range or
    period is an index range scan whatever the tables' statistics say."""
    each = inner.offset(0).lateral(name)
    return select(*each.c).select_from(outer).join(each, true())


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
        _for_each(ranges, started, "started"),
        _for_each(ranges, completed, "completed"),
        _for_each(ranges, steps, "steps"),
    ]


_MOMENTS = ARRAY(DateTime(timezone=True))


def _moments(name: str, moments: Sequence[datetime | None]) -> BindParameter[Any]:
    """A list of moments as one array parameter, so that the statement's cached form serves
    every list."""
    return bindparam(name, list(moments), type_=_MOMENTS)


def _ranges(*rows: tuple[datetime, datetime]) -> Select[tuple[datetime, datetime]]:
    """The given (lo, hi) ranges that are not empty."""
    pairs = (
        func.unnest(
            _moments("range_starts", [lo for lo, _ in rows]),
            _moments("range_ends", [hi for _, hi in rows]),
        )
        .table_valued(column("lo", DateTime(timezone=True)), column("hi", DateTime(timezone=True)))
        .render_derived()
    )
    return select(pairs.c.lo, pairs.c.hi).where(pairs.c.lo < pairs.c.hi)


def _rolled_until() -> ScalarSelect[datetime | None]:
    return select(RollupState.rolled_until).scalar_subquery()


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
    middle_start, middle_end = _ceil(scope.start, grain), _floor(scope.end, grain)
    if middle_start >= middle_end:
        middle_start = middle_end = scope.start
    # The middle's part that is rolled up: [middle_start, rolled_end).
    rolled_end = func.least(
        middle_end, func.greatest(middle_start, func.coalesce(_rolled_until(), middle_start))
    )
    marked = func.date_bin(grain, UsageRollupMark.bucket_at, _EPOCH, type_=DateTime(True))
    stale_buckets = [
        select(marked.label("bucket_at"))
        .distinct()  # a bucket may have many marks
        .where(marked >= middle_start, marked < rolled_end)
    ]
    if uneven := uneven_buckets(middle_start, middle_end, zone, grain):
        listed = (
            func.unnest(_moments("uneven", uneven))
            .table_valued(column("bucket_at", DateTime(timezone=True)))
            .render_derived()
        )
        stale_buckets.append(select(listed.c.bucket_at).where(listed.c.bucket_at < rolled_end))
    stale = union(*stale_buckets).cte("stale")
    live = union_all(
        _ranges((scope.start, middle_start), (middle_end, scope.end)),
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
        *_live_usage(_ranges((start, end)).subquery("fixed"), BillingScope(start, end, None, None))
    ).subquery("facts")
    _insert_usage(session, UsageLevel.QUARTER_HOUR, GRAIN, facts)
    finer = UsageLevel.QUARTER_HOUR
    for level, grain in reversed(USAGE_LEVELS[:-1]):
        low, high = _floor(start, grain), _ceil(end, grain)
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
    bucket = func.date_bin(grain, facts.c.at, _EPOCH, type_=DateTime(True))
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


# --- The steps funnel ---------------------------------------------------------------------


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


def _month_after(moment: datetime) -> datetime:
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
    first_day, last_day = _ceil(cohort.start, DAY), _floor(cohort.end, DAY)
    if first_day >= last_day:
        first_day = last_day = cohort.start
    days: list[datetime] = []
    months: list[datetime | None] = []
    day = first_day
    while day < last_day:
        month = datetime.combine(period_start(day.date(), Interval.MONTH), time(), UTC)
        whole = month >= first_day and _month_after(month) <= last_day
        days.append(day)
        months.append(month if whole else None)
        day += DAY
    rolled = func.coalesce(_rolled_until(), literal(datetime.min.replace(tzinfo=UTC)))
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
            func.unnest(_moments("days", days), _moments("months", months))
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
        _ranges((cohort.start, first_day), (last_day, cohort.end)),
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
        if measure.histogram is None:
            columns = [
                *(getattr(rollup, key) for key in measure.keys),
                *(getattr(rollup, name).label(name) for name, _ in measure.sums),
            ]
        else:
            (name, _), last = measure.sums[0], measure.keys[-1]
            histogram = (
                func.unnest(getattr(rollup, measure.histogram), getattr(rollup, name))
                .table_valued(column(last, Integer), column(name, Integer))
                .render_derived()
            )
            columns = [
                *(getattr(rollup, key) for key in measure.keys[:-1]),
                histogram.c[last],
                histogram.c[name],
            ]
        of_period = select(*columns).where(
            rollup.configuration_id == cohort.configuration_id,
            rollup.level == level,
            rollup.customer_id == scope_id,
            rollup.period_start == periods.c.period_start,
        )
        return _for_each(periods, of_period, f"{level.value}_rows")

    created_at = measure.created_at()
    of_range = (
        select(
            *(getattr(source, key) for key in measure.keys),
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
    parts = union_all(
        rolled(Level.MONTH, plan.months),
        rolled(Level.DAY, plan.days),
        _for_each(plan.live, of_range, "live_rows"),
    ).subquery("parts")
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
            counted = _as_histograms(counted.subquery("counted"), measure)
        session.execute(
            insert(rollup).from_select(
                [column.name for column in counted.selected_columns], counted
            )
        )


def _as_histograms(counted: Subquery, measure: _Measure) -> Select[Any]:
    """Counted rows (one per value of the measure's last key) as one row per other keys, with
    the last key's values in order and their sums as two arrays."""
    (name, _), last = measure.sums[0], measure.keys[-1]
    others = [
        counted.c[key]
        for key in ("configuration_id", "level", "customer_id", "period_start", *measure.keys[:-1])
    ]
    return select(
        *others,
        func.array_agg(aggregate_order_by(counted.c[last], counted.c[last])).label(
            measure.histogram or last
        ),
        func.array_agg(aggregate_order_by(counted.c[name], counted.c[last])).label(name),
    ).group_by(*others)


# --- The roll-up task ---------------------------------------------------------------------


def _locked_state(session: Session) -> RollupState:
    """The state row, read afresh and locked: one roll-up transaction at a time. (The
    migration makes it; without it, as after a TRUNCATE, nothing is rolled up or closed.)"""
    session.execute(postgresql.insert(RollupState).values(id=1).on_conflict_do_nothing())
    statement = select(RollupState).with_for_update().execution_options(populate_existing=True)
    return session.execute(statement).scalar_one()


def close_periods(session: Session, *, now: datetime) -> datetime:
    """Close the UTC days that ended CLOSE_AFTER ago: from now on their writers mark them.
    Returns the new `closed_until`; it never moves back."""
    horizon = _floor(now - CLOSE_AFTER, DAY)
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
        start = _floor(min(found or until, until), DAY)
    end = min(start + DAY, until)
    if found is None or found >= end:  # nothing in [start, end): skip to the next data
        end = min(_floor(found, DAY) if found is not None else until, until)
        if start != _floor_month(start):
            end = min(end, _month_after(_floor_month(start)))
        end = max(end, min(start + DAY, until))
    configurations = list(session.scalars(select(JobConfiguration.id)))
    roll_usage(session, start=start, end=end)
    roll_funnel(session, level=Level.DAY, start=start, end=end, configuration_ids=configurations)
    if end == _floor_month(end):  # a month is over
        month = _floor_month(end - DAY)
        roll_funnel(
            session, level=Level.MONTH, start=month, end=end, configuration_ids=configurations
        )
    state.rolled_until = end
    session.flush()
    return end


def _floor_month(moment: datetime) -> datetime:
    return datetime.combine(period_start(moment.date(), Interval.MONTH), time(), UTC)


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
        month = _floor_month(day)
        if _month_after(month) <= rolled_until:
            months.add((configuration_id, month))
    for configuration_id, month in sorted(months):
        roll_funnel(
            session,
            level=Level.MONTH,
            start=month,
            end=_month_after(month),
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
