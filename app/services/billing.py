"""Billing: usage per customer and period, and monthly invoices.

Both read the step completions (one row per job and step, at the step's first completion time,
with the cost it was billed at) and the job rows, never the events. A step is billed in the period
in which it completed, so an invoice's total is the usage cost of its month.
"""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    SQLColumnExpression,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.exc import DataError
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.errors import InvalidInput
from app.internal.periods import (
    Interval,
    check_period_count,
    check_span,
    check_years,
    instant,
    local_midnight,
    next_period,
)
from app.models import (
    Customer,
    Job,
    JobConfiguration,
    JobConfigurationStep,
    JobStatus,
    JobStepCompletion,
)
from app.schemas.billing import Invoice, InvoiceLine, Usage, UsageFigures, UsageRow
from app.services.access import Caller, report_customer
from app.services.customers import get_customer

# Zones PostgreSQL has said it knows, for the life of the process.
_zones_known_to_database: set[str] = set()


def time_zone(session: Session, name: str) -> ZoneInfo:
    """The IANA zone `name`, which both Python (tzdata) and PostgreSQL must know, or the periods
    could not be cut alike; else invalid input."""
    unknown = f"Unknown time zone {name!r}: give an IANA name such as Europe/Paris or UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        # ValueError, OSError: names that are no zone file ("../x", "America").
        raise InvalidInput(unknown) from error
    if name not in _zones_known_to_database:
        try:
            with session.begin_nested():
                session.execute(select(func.timezone(name, func.now())))
        except DataError as error:  # newer than the server's zone data, or not a zone to it
            raise InvalidInput(unknown) from error
        _zones_known_to_database.add(name)
    return zone


@dataclass(frozen=True)
class BillingScope:
    """Which rows a report counts: a time range, a customer or all, a configuration tag or all."""

    start: datetime
    end: datetime
    customer_id: int | None
    tag: str | None

    def where(
        self,
        moment: InstrumentedAttribute[Any],
        customer_id: InstrumentedAttribute[int],
        configuration_id: InstrumentedAttribute[int],
    ) -> list[ColumnElement[bool]]:
        clauses = [moment >= self.start, moment < self.end]
        if self.customer_id is not None:
            clauses.append(customer_id == self.customer_id)
        if self.tag is not None:
            clauses.append(
                configuration_id.in_(
                    select(JobConfiguration.id).where(JobConfiguration.tag == self.tag)
                )
            )
        return clauses


_FIGURES = ("jobs_started", "jobs_completed", "jobs_failed", "steps_completed", "points", "cost")


def _facts(
    customer_id: InstrumentedAttribute[int],
    moment: InstrumentedAttribute[Any],
    *,
    counts: str,
    points: InstrumentedAttribute[int] | None = None,
    cost: InstrumentedAttribute[Decimal] | None = None,
) -> list[SQLColumnExpression[Any]]:
    """The columns of one kind of fact: its customer, its time, 1 in the figure it counts."""
    values: dict[str, SQLColumnExpression[Any]] = {name: literal(0, Integer) for name in _FIGURES}
    values[counts] = literal(1, Integer)
    if points is not None:
        values["points"] = points
    if cost is not None:
        values["cost"] = cost
    return [customer_id, moment.label("at"), *(value.label(name) for name, value in values.items())]


def usage_statement(
    scope: BillingScope, *, interval: Interval, tz: str
) -> Select[*tuple[Any, ...]]:
    """One row per customer and period with something in it. Every fact (a job started, completed
    or failed; a step completed) is one row of a UNION ALL at its time; the outer query cuts the
    times into periods in `tz` and adds them up. Each part is an index range scan on its time."""

    def jobs(moment: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
        return scope.where(moment, Job.customer_id, Job.configuration_id)

    completions = scope.where(
        JobStepCompletion.completed_at,
        JobStepCompletion.customer_id,
        JobStepCompletion.configuration_id,
    )
    facts = union_all(
        select(*_facts(Job.customer_id, Job.created_at, counts="jobs_started")).where(
            *jobs(Job.created_at)
        ),
        select(*_facts(Job.customer_id, Job.completed_at, counts="jobs_completed")).where(
            *jobs(Job.completed_at)
        ),
        select(*_facts(Job.customer_id, Job.last_event_at, counts="jobs_failed")).where(
            *jobs(Job.last_event_at), Job.status == JobStatus.FAILED
        ),
        select(
            *_facts(
                JobStepCompletion.customer_id,
                JobStepCompletion.completed_at,
                counts="steps_completed",
                points=JobStepCompletion.points,
                cost=JobStepCompletion.cost,
            )
        ).where(*completions),
    ).subquery("facts")
    local_period = func.date_trunc(interval.value, func.timezone(tz, facts.c.at), type_=DateTime())
    by_period = select(
        facts.c.customer_id, local_period.label("period"), *(facts.c[name] for name in _FIGURES)
    ).subquery("by_period")
    totals = (
        select(
            by_period.c.period,
            by_period.c.customer_id,
            *(func.sum(by_period.c[name]).label(name) for name in _FIGURES),
        )
        .group_by(by_period.c.period, by_period.c.customer_id)
        .subquery("totals")
    )
    period_start = func.timezone(tz, totals.c.period, type_=DateTime(timezone=True))
    return (
        select(
            period_start.label("period_start"),
            totals.c.customer_id,
            Customer.name.label("customer_name"),
            *(totals.c[name] for name in _FIGURES),
        )
        .join_from(totals, Customer, Customer.id == totals.c.customer_id)
        .order_by(totals.c.period, totals.c.customer_id)
    )


def get_usage(
    session: Session,
    *,
    caller: Caller,
    start: datetime | date,
    end: datetime | date,
    interval: Interval,
    tz: str = "UTC",
    customer_id: int | None = None,
    tag: str | None = None,
) -> Usage:
    """Usage per customer and period of [start, end); a date is midnight in `tz`. Periods with
    nothing in them are left out, so a customer with no activity has no rows (totals zero)."""
    zone = time_zone(session, tz)
    check_years(start.year, end.year)  # as given: a date is a day in `tz`
    start_at, end_at = instant(start, zone), instant(end, zone)
    check_span(start_at, end_at)
    check_period_count(start_at, end_at, interval, zone)
    scope = BillingScope(
        start_at, end_at, report_customer(session, caller=caller, customer_id=customer_id), tag
    )
    rows = [
        UsageRow.model_validate({**row._mapping, "period_start": row.period_start.astimezone(zone)})
        for row in session.execute(usage_statement(scope, interval=interval, tz=tz))
    ]
    return Usage(
        from_=start_at.astimezone(zone),
        to=end_at.astimezone(zone),
        interval=interval,
        tz=tz,
        customer_id=scope.customer_id,
        tag=tag,
        rows=rows,
        totals=UsageFigures.model_validate(
            {name: sum((getattr(row, name) for row in rows), start=0) for name in _FIGURES}
        ),
    )


def invoice_statement(scope: BillingScope) -> Select[*tuple[Any, ...]]:
    """The month's completions of one customer, per step and price, with their configuration."""
    completions = (
        select(
            JobStepCompletion.step_id,
            JobStepCompletion.cost.label("unit_cost"),
            func.count().label("quantity"),
        )
        .where(
            *scope.where(
                JobStepCompletion.completed_at,
                JobStepCompletion.customer_id,
                JobStepCompletion.configuration_id,
            )
        )
        .group_by(JobStepCompletion.step_id, JobStepCompletion.cost)
        .subquery("completions")
    )
    return (
        select(
            JobConfiguration.tag,
            JobConfiguration.version,
            JobConfiguration.name.label("configuration_name"),
            JobConfigurationStep.position.label("step_position"),
            JobConfigurationStep.tag.label("step_tag"),
            JobConfigurationStep.name.label("step_name"),
            completions.c.quantity,
            completions.c.unit_cost,
            (completions.c.quantity * completions.c.unit_cost).label("amount"),
        )
        .join_from(
            completions, JobConfigurationStep, JobConfigurationStep.id == completions.c.step_id
        )
        .join(JobConfiguration, JobConfiguration.id == JobConfigurationStep.configuration_id)
        .order_by(
            JobConfiguration.tag,
            JobConfiguration.version,
            JobConfigurationStep.position,
            completions.c.unit_cost,
        )
    )


def get_invoice(
    session: Session, *, caller: Caller, customer_id: int | None, period: str, tz: str = "UTC"
) -> Invoice:
    """The invoice of one customer for one month (`period` YYYY-MM, months cut in `tz`). An admin
    names the customer; a client's invoice is its own customer's."""
    zone = time_zone(session, tz)
    check_years(int(period[:4]))
    invoiced = report_customer(session, caller=caller, customer_id=customer_id)
    if invoiced is None:
        raise InvalidInput("customer_id is required: an admin names the customer to invoice")
    customer = get_customer(session, caller=caller, customer_id=invoiced)
    first_day = date.fromisoformat(f"{period}-01")
    scope = BillingScope(
        local_midnight(first_day, zone),
        local_midnight(next_period(first_day, Interval.MONTH), zone),
        customer.id,
        None,
    )
    lines = [
        InvoiceLine.model_validate(row._mapping)
        for row in session.execute(invoice_statement(scope))
    ]
    return Invoice(
        customer_id=customer.id,
        customer_name=customer.name,
        period=period,
        tz=tz,
        period_start=scope.start.astimezone(zone),
        period_end=scope.end.astimezone(zone),
        lines=lines,
        total=sum((line.amount for line in lines), start=Decimal(0)),
    )
