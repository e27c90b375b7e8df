"""Billing: usage per customer and period, and monthly invoices.

Both read the step completions (one row per job and step, at the step's first completion time,
with the cost it was billed at) and the job rows, never the events. A step is billed in the period
in which it completed, so an invoice's total is the usage cost of its month.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    DateTime,
    Select,
    func,
    select,
)
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

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
    JobConfiguration,
    JobConfigurationStep,
    JobStepCompletion,
)
from app.schemas.billing import Invoice, InvoiceLine, Usage, UsageFigures, UsageRow
from app.services.access import Caller, report_customer
from app.services.customers import get_customer
from app.services.rollups import usage as usage_rollups
from app.services.rollups.usage import USAGE_FIGURES, BillingScope

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


def usage_statement(
    scope: BillingScope, *, interval: Interval, tz: str, zone: ZoneInfo
) -> Select[*tuple[Any, ...]]:
    """One row per customer and period with something in it. Every fact (a job started, completed
    or failed; a step completed; a rollup of a quarter hour's) is one row of a UNION ALL at its
    time (`usage_rollups.usage_facts`); this query cuts the times into periods in `tz` and adds
    them up."""
    facts = usage_rollups.usage_facts(scope, zone)
    local_period = func.date_trunc(interval.value, func.timezone(tz, facts.c.at), type_=DateTime())
    by_period = select(
        facts.c.customer_id,
        local_period.label("period"),
        *(facts.c[name] for name in USAGE_FIGURES),
    ).subquery("by_period")
    totals = (
        select(
            by_period.c.period,
            by_period.c.customer_id,
            *(func.sum(by_period.c[name]).label(name) for name in USAGE_FIGURES),
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
            *(totals.c[name] for name in USAGE_FIGURES),
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
        for row in session.execute(usage_statement(scope, interval=interval, tz=tz, zone=zone))
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
            {name: sum((getattr(row, name) for row in rows), start=0) for name in USAGE_FIGURES}
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
            *scope.during(
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
