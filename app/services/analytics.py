"""Analytics: jobs by status, configuration and period; the failure funnel of a configuration's
steps; and usage per customer.

None of these reads the events table (the volume): they read the job rows, the first
completion of each step (`job_step_completions`) and the errors counted per step
(`job_step_errors`), which `apply_events` keeps in the same transaction as the events.
"""

from collections import defaultdict
from datetime import datetime

from sqlalchemy import ColumnElement, cast, func, select, true, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.periods import Interval, check_range, period_starts
from app.internal.quantiles import quantiles
from app.models import (
    Customer,
    Job,
    JobConfiguration,
    JobStatus,
    JobStepCompletion,
)
from app.models.job_configuration import JobConfigurationStep, Money
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
from app.services.access import Caller, report_customer, require_admin
from app.services.job_configurations import get_configuration
from app.services.rollups import funnel as funnel_rollups


def _of_customer(
    column: InstrumentedAttribute[int], customer_id: int | None
) -> ColumnElement[bool]:
    """Rows of the customer a report is narrowed to, or every row (None)."""
    return true() if customer_id is None else column == customer_id


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
    customer = report_customer(session, caller=caller, customer_id=customer_id)
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
            _of_customer(Job.customer_id, customer),
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
    bucket of their time (`quantiles`), and the errors counted by step; each from the rollups
    where they are valid, else live (`funnel_rollups.funnel_counts`)."""
    check_range(start, end)
    customer = report_customer(session, caller=caller, customer_id=customer_id)
    configuration = get_configuration(session, tag=tag, version=version)
    cohort = funnel_rollups.Cohort(configuration.id, start, end, customer)
    jobs = _cohort_size(session, cohort)
    timings = _completion_timings(session, cohort)
    errors = _errors_by_step(session, cohort)
    return StepFunnel(
        tag=configuration.tag,
        version=configuration.version,
        configuration_id=configuration.id,
        jobs=jobs,
        steps=[
            _step_analytics(step, timings[step.id], errors.get(step.id, (0, 0)))
            for step in configuration.steps
        ],
    )


def _cohort_size(session: Session, cohort: funnel_rollups.Cohort) -> int:
    rows = funnel_rollups.funnel_counts(session, cohort, funnel_rollups.JOBS)
    return int(rows[0][0] or 0) if rows else 0


def _completion_timings(
    session: Session, cohort: funnel_rollups.Cohort
) -> defaultdict[int, list[tuple[int, int]]]:
    """Per step, its completions counted by bucket of their time: (bucket, count) pairs."""
    timings: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for step_id, bucket, count in funnel_rollups.funnel_counts(
        session, cohort, funnel_rollups.COMPLETIONS
    ):
        timings[step_id].append((bucket, int(count)))
    return timings


def _errors_by_step(session: Session, cohort: funnel_rollups.Cohort) -> dict[int, tuple[int, int]]:
    """Per step: the error events naming it, and the jobs that failed at it and never
    completed it (they reached it too)."""
    rows = funnel_rollups.funnel_counts(session, cohort, funnel_rollups.ERRORS)
    return {step_id: (int(errors), int(failed_only)) for step_id, errors, failed_only in rows}


def _step_analytics(
    step: JobConfigurationStep, timings: list[tuple[int, int]], errors: tuple[int, int]
) -> StepAnalytics:
    completions = sum(count for _, count in timings)
    error_count, failed_only = errors
    median, p95 = quantiles(timings, [0.5, 0.95])
    return StepAnalytics(
        position=step.position,
        tag=step.tag,
        name=step.name,
        jobs_reached=completions + failed_only,
        completions=completions,
        errors=error_count,
        error_rate=_ratio(error_count, completions + error_count),
        median_seconds=median,
        p95_seconds=p95,
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
