"""Analytics: jobs by status, configuration and period; the failure funnel of a configuration's
steps; and usage per customer.

None of these reads the events table (the volume): they read the job rows, the first
completion of each step (`job_step_completions`) and the errors counted per step
(`job_step_errors`), which `apply_events` keeps in the same transaction as the events.
"""

import enum
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, cast, func, select, true, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.errors import InvalidInput, NotFound
from app.internal.quantiles import quantiles
from app.models import (
    Customer,
    Job,
    JobConfiguration,
    JobStatus,
    JobStepCompletion,
    JobStepError,
)
from app.models.job_configuration import Money
from app.schemas.analytics import (
    ConfigurationCount,
    CustomerAnalytics,
    CustomersAnalytics,
    JobAnalytics,
    PeriodCount,
    StatusCount,
    StepAnalytics,
    StepFunnel,
)
from app.services.access import Caller, require_admin
from app.services.billing import check_years
from app.services.job_configurations import get_configuration

MAX_RANGE_YEARS = 5
# Five calendar years span at most 1,827 days (two of them leap years).
MAX_RANGE = timedelta(days=365 * MAX_RANGE_YEARS + 2)
MAX_PERIODS = 400


class Interval(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def check_range(start: datetime, end: datetime) -> None:
    """[start, end) must be a non-empty range of at most five years, in the years billing
    knows (periods are cut up to the start of the next one, which must exist)."""
    check_years(start.year, end.year)
    if start >= end:
        raise InvalidInput("`from` must be before `to`")
    if end - start > MAX_RANGE:
        raise InvalidInput(
            f"The range may span at most {MAX_RANGE_YEARS} years ({MAX_RANGE.days} days)"
        )


def _period_start(moment: datetime, interval: Interval) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == Interval.WEEK:
        return day - timedelta(days=day.weekday())  # weeks start on Monday
    if interval == Interval.MONTH:
        return day.replace(day=1)
    return day


def _next_period(start: datetime, interval: Interval) -> datetime:
    if interval == Interval.MONTH:
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=7 if interval == Interval.WEEK else 1)


def period_starts(start: datetime, end: datetime, interval: Interval) -> list[datetime]:
    """The start of every period (in UTC) overlapping [start, end), at most MAX_PERIODS."""
    check_range(start, end)
    starts = [_period_start(start.astimezone(UTC), interval)]
    while (following := _next_period(starts[-1], interval)) < end:
        if len(starts) == MAX_PERIODS:
            raise InvalidInput(
                f"The range covers more than {MAX_PERIODS} periods of one {interval.value}: "
                "ask for a longer interval or a shorter range"
            )
        starts.append(following)
    return starts


CustomerScope = Callable[[InstrumentedAttribute[int]], ColumnElement[bool]]


def _customer_scope(session: Session, caller: Caller, customer_id: int | None) -> CustomerScope:
    """What the caller may see, narrowed to `customer_id` (a customer the caller may see), as a
    WHERE clause on any customer id column."""
    if customer_id is None:
        return caller.customer_filter
    if not caller.can_see_customer(customer_id) or session.get(Customer, customer_id) is None:
        raise NotFound(f"Customer {customer_id} not found")
    return lambda column: column == customer_id


def job_analytics(
    session: Session,
    *,
    caller: Caller,
    start: datetime,
    end: datetime,
    interval: Interval,
    customer_id: int | None = None,
    tag: str | None = None,
) -> JobAnalytics:
    """Jobs created in [start, end) by status, by configuration version and by period."""
    starts = period_starts(start, end, interval)
    period = func.date_trunc(interval.value, Job.created_at, "UTC")
    # One pass over the range's jobs, grouped three ways.
    statement = (
        select(
            Job.status,
            JobConfiguration.tag,
            JobConfiguration.version,
            period.label("period"),
            func.count().label("jobs"),
        )
        .join(JobConfiguration, JobConfiguration.id == Job.configuration_id)
        .where(
            _customer_scope(session, caller, customer_id)(Job.customer_id),
            Job.created_at >= start,
            Job.created_at < end,
            JobConfiguration.tag == tag if tag is not None else true(),
        )
        .group_by(
            func.grouping_sets(
                tuple_(Job.status),
                tuple_(JobConfiguration.tag, JobConfiguration.version),
                tuple_(period),
            )
        )
    )
    by_status = dict.fromkeys(JobStatus, 0)
    by_configuration: list[ConfigurationCount] = []
    by_period = dict.fromkeys(starts, 0)
    for row in session.execute(statement):
        if row.status is not None:
            by_status[row.status] = row.jobs
        elif row.tag is not None:
            by_configuration.append(
                ConfigurationCount(tag=row.tag, version=row.version, count=row.jobs)
            )
        else:
            by_period[row.period] = row.jobs
    return JobAnalytics(
        total=sum(by_status.values()),
        by_status=[StatusCount(status=status, count=count) for status, count in by_status.items()],
        by_configuration=sorted(by_configuration, key=lambda item: (item.tag, item.version)),
        by_period=[
            PeriodCount(period_start=period_start, count=count)
            for period_start, count in by_period.items()
        ],
    )


def step_funnel(
    session: Session,
    *,
    caller: Caller,
    tag: str,
    version: int | None,
    start: datetime,
    end: datetime,
    customer_id: int | None = None,
) -> StepFunnel:
    """Per step of a configuration version (the latest by default), for its jobs created in
    [start, end): how many reached it, completed it or failed at it, and how long it took.

    Three aggregates, none of them a sort: the jobs, the completions counted by step and by
    bucket of their time (`quantiles`), and the errors counted by step."""
    check_range(start, end)
    customer_scope = _customer_scope(session, caller, customer_id)
    configuration = get_configuration(session, tag=tag, version=version)
    completion, error = JobStepCompletion, JobStepError

    def scoped(table: type[JobStepCompletion | JobStepError]) -> list[ColumnElement[bool]]:
        return [
            table.configuration_id == configuration.id,
            table.job_created_at >= start,
            table.job_created_at < end,
            customer_scope(table.customer_id),
        ]

    jobs = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.configuration_id == configuration.id,
            Job.created_at >= start,
            Job.created_at < end,
            customer_scope(Job.customer_id),
        )
    )
    timings: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for step_id, key, count in session.execute(
        select(completion.step_id, completion.seconds_bucket, func.count())
        .where(*scoped(completion))
        .group_by(completion.step_id, completion.seconds_bucket)
    ):
        timings[step_id].append((key, count))
    errors = {
        row.step_id: row
        for row in session.execute(
            select(
                error.step_id,
                func.sum(error.error_count).label("errors"),
                # Jobs that failed at the step and never completed it also reached it.
                func.count().filter(error.step_completed.is_(False)).label("failed_only"),
            )
            .where(*scoped(error))
            .group_by(error.step_id)
        )
    }

    steps = []
    for step in configuration.steps:
        completions = sum(count for _, count in timings[step.id])
        errored = errors.get(step.id)
        error_count = int(errored.errors) if errored else 0
        median, p95 = quantiles(timings[step.id], [0.5, 0.95])
        steps.append(
            StepAnalytics(
                position=step.position,
                tag=step.tag,
                name=step.name,
                jobs_reached=completions + (errored.failed_only if errored else 0),
                completions=completions,
                errors=error_count,
                error_rate=_ratio(error_count, completions + error_count),
                median_seconds=median,
                p95_seconds=p95,
            )
        )
    return StepFunnel(
        tag=configuration.tag,
        version=configuration.version,
        configuration_id=configuration.id,
        jobs=jobs or 0,
        steps=steps,
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def customer_analytics(
    session: Session, *, caller: Caller, start: datetime, end: datetime
) -> CustomersAnalytics:
    """Every customer's jobs created in [start, end), their outcomes, and the cost of the steps
    completed in the range (admins only)."""
    require_admin(caller)
    check_range(start, end)
    jobs = (
        select(
            Job.customer_id,
            func.count().label("jobs"),
            func.count().filter(Job.status == JobStatus.COMPLETED).label("completed"),
            func.count().filter(Job.status == JobStatus.FAILED).label("failed"),
            func.max(Job.last_event_at).label("last_activity"),
        )
        .where(Job.created_at >= start, Job.created_at < end)
        .group_by(Job.customer_id)
        .subquery("customer_jobs")
    )
    costs = (
        select(
            JobStepCompletion.customer_id,
            func.sum(JobStepCompletion.cost).label("cost"),
        )
        .where(JobStepCompletion.completed_at >= start, JobStepCompletion.completed_at < end)
        .group_by(JobStepCompletion.customer_id)
        .subquery("customer_costs")
    )
    rows = session.execute(
        select(
            Customer.id,
            Customer.name,
            func.coalesce(jobs.c.jobs, 0).label("jobs"),
            func.coalesce(jobs.c.completed, 0).label("completed"),
            func.coalesce(jobs.c.failed, 0).label("failed"),
            func.coalesce(costs.c.cost, cast(0, Money)).label("cost"),
            jobs.c.last_activity,
        )
        .outerjoin(jobs, jobs.c.customer_id == Customer.id)
        .outerjoin(costs, costs.c.customer_id == Customer.id)
        .order_by(Customer.name, Customer.id)
    )
    return CustomersAnalytics(
        customers=[
            CustomerAnalytics(
                customer_id=row.id,
                name=row.name,
                jobs=row.jobs,
                completed=row.completed,
                failed=row.failed,
                error_rate=_ratio(row.failed, row.jobs),
                cost=row.cost,
                last_activity=row.last_activity,
            )
            for row in rows
        ]
    )
