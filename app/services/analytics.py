"""Analytics: jobs by status, configuration and period; the failure funnel of a configuration's
steps; and usage per customer.

None of these reads the events table (the volume): they read the job rows, the first
completion of each step (`job_step_completions`) and the errors counted per step
(`job_step_errors`), which `apply_events` keeps in the same transaction as the events.
"""

import enum
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Double, and_, cast, func, select, true, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from app.internal.errors import InvalidInput, NotFound
from app.models import (
    Customer,
    Job,
    JobConfiguration,
    JobConfigurationStep,
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


def _customer_scope(
    session: Session, caller: Caller, customer_id: int | None
) -> ColumnElement[bool]:
    """A WHERE clause on `Job.customer_id` for what the caller may see, narrowed to
    `customer_id`, which must be a customer the caller may see."""
    if customer_id is None:
        return caller.customer_filter(Job.customer_id)
    if not caller.can_see_customer(customer_id) or session.get(Customer, customer_id) is None:
        raise NotFound(f"Customer {customer_id} not found")
    return Job.customer_id == customer_id


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
            _customer_scope(session, caller, customer_id),
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
    [start, end): how many reached it, completed it or failed at it, and how long it took."""
    check_range(start, end)
    customer_scope = _customer_scope(session, caller, customer_id)
    configuration = get_configuration(session, tag=tag, version=version)
    jobs = (
        select(Job.id, Job.created_at)
        .where(
            Job.configuration_id == configuration.id,
            Job.created_at >= start,
            Job.created_at < end,
            customer_scope,
        )
        .cte("scoped_jobs")
    )
    completion = JobStepCompletion
    # Each completion's time since the job's previous completion, or since its creation for the
    # first; steps completed at the same moment are taken in step id order (the steps' order).
    previous = func.lag(completion.completed_at).over(
        partition_by=completion.job_id, order_by=(completion.completed_at, completion.step_id)
    )
    seconds = func.extract(
        "epoch", completion.completed_at - func.coalesce(previous, jobs.c.created_at)
    )
    timed = (
        select(completion.step_id, cast(seconds, Double).label("seconds"))
        .join(jobs, jobs.c.id == completion.job_id)
        .cte("timed")
    )
    # Materialized: each aggregate is computed once, whatever the plan of the final join.
    completed = (
        select(
            timed.c.step_id,
            func.count().label("completions"),
            func.percentile_cont(postgresql.array([0.5, 0.95]))
            .within_group(timed.c.seconds)
            .label("percentiles"),
        )
        .group_by(timed.c.step_id)
        .cte("completed")
        .prefix_with("MATERIALIZED")
    )
    errored = (
        select(
            JobStepError.step_id,
            func.sum(JobStepError.error_count).label("errors"),
            # Jobs that failed at the step and never completed it also reached it.
            func.count().filter(completion.job_id.is_(None)).label("failed_only"),
        )
        .join(jobs, jobs.c.id == JobStepError.job_id)
        .outerjoin(
            completion,
            and_(
                completion.job_id == JobStepError.job_id,
                completion.step_id == JobStepError.step_id,
            ),
        )
        .where(JobStepError.configuration_id == configuration.id)
        .group_by(JobStepError.step_id)
        .cte("errored")
        .prefix_with("MATERIALIZED")
    )
    step = JobConfigurationStep
    rows = session.execute(
        select(
            step.position,
            step.tag,
            step.name,
            func.coalesce(completed.c.completions, 0).label("completions"),
            func.coalesce(errored.c.errors, 0).label("errors"),
            func.coalesce(errored.c.failed_only, 0).label("failed_only"),
            completed.c.percentiles,
            select(func.count()).select_from(jobs).scalar_subquery().label("jobs"),
        )
        .outerjoin(completed, completed.c.step_id == step.id)
        .outerjoin(errored, errored.c.step_id == step.id)
        .where(step.configuration_id == configuration.id)
        .order_by(step.position)
    ).all()
    return StepFunnel(
        tag=configuration.tag,
        version=configuration.version,
        configuration_id=configuration.id,
        jobs=rows[0].jobs if rows else 0,
        steps=[
            StepAnalytics(
                position=row.position,
                tag=row.tag,
                name=row.name,
                jobs_reached=row.completions + row.failed_only,
                completions=row.completions,
                errors=row.errors,
                error_rate=_ratio(row.errors, row.completions + row.errors),
                median_seconds=row.percentiles[0] if row.percentiles else None,
                p95_seconds=row.percentiles[1] if row.percentiles else None,
            )
            for row in rows
        ],
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
