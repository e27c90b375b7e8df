"""The billing service called directly: ranges and periods in a time zone, the customer a report
is for, and the month an invoice covers."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import InvalidInput, NotFound
from app.internal.periods import Interval
from app.models import Customer
from app.schemas.billing import Usage
from app.services import billing
from app.services.access import Caller
from tests.helpers.factories import (
    create_admin,
    create_configuration,
    create_customer,
    create_job,
    create_user,
)

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def admin(db: Session) -> Caller:
    return Caller(create_admin(db))


def job_created_at(db: Session, customer: Customer, created_at: datetime) -> None:
    create_job(db, configuration=create_configuration(db), customer=customer, created_at=created_at)


def usage(db: Session, caller: Caller, customer_id: int | None, tz: str = "UTC") -> Usage:
    """Monthly usage from January 1 to March 1, 2026 (midnights in `tz`)."""
    return billing.get_usage(
        db,
        caller=caller,
        start=date(2026, 1, 1),
        end=date(2026, 3, 1),
        interval=Interval.MONTH,
        tz=tz,
        customer_id=customer_id,
    )


def test_dates_are_midnights_in_the_zone_and_periods_are_cut_there(
    db: Session, admin: Caller
) -> None:
    customer = create_customer(db)
    # 23:30 UTC on January 31 is February 1 in Paris.
    job_created_at(db, customer, datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    in_paris = usage(db, admin, customer.id, "Europe/Paris")
    assert in_paris.from_ == datetime(2026, 1, 1, tzinfo=PARIS)
    assert in_paris.to == datetime(2026, 3, 1, tzinfo=PARIS)
    assert [(row.period_start, row.jobs_started) for row in in_paris.rows] == [
        (datetime(2026, 2, 1, tzinfo=PARIS), 1)
    ]
    in_utc = usage(db, admin, customer.id)
    assert [row.period_start for row in in_utc.rows] == [datetime(2026, 1, 1, tzinfo=UTC)]
    assert in_utc.totals.jobs_started == 1
    assert in_utc.totals.cost == Decimal("0.0000")


@pytest.mark.parametrize(
    ("start", "end", "interval", "message"),
    [
        (date(2026, 2, 1), date(2026, 1, 1), Interval.MONTH, "'from' must be before 'to'"),
        (date(2020, 1, 1), date(2025, 1, 2), Interval.MONTH, "at most 5 years (1827 days)"),
        (date(2025, 1, 1), date(2026, 2, 6), Interval.DAY, "covers 401 days: at most 400"),
        (date(1969, 12, 31), date(1970, 2, 1), Interval.DAY, "years 1970 to 9998"),
        (date(9998, 12, 1), date(9999, 1, 1), Interval.DAY, "years 1970 to 9998"),
    ],
)
def test_a_bad_range_is_invalid_input_saying_why(
    db: Session, admin: Caller, start: date, end: date, interval: Interval, message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        billing.get_usage(db, caller=admin, start=start, end=end, interval=interval)


def test_a_range_is_checked_in_the_zone_its_dates_are_read_in(db: Session, admin: Caller) -> None:
    # 400 days in UTC; in Tokyo (UTC+9) the range ends at 09:00 on a 401st day.
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime(2026, 2, 5, tzinfo=UTC)
    billing.get_usage(db, caller=admin, start=start, end=end, interval=Interval.DAY)
    with pytest.raises(InvalidInput, match="covers 401 days"):
        billing.get_usage(
            db, caller=admin, start=start, end=end, interval=Interval.DAY, tz="Asia/Tokyo"
        )


def test_an_unknown_zone_is_invalid_input(db: Session, admin: Caller) -> None:
    with pytest.raises(InvalidInput, match="Unknown time zone 'Mars/Olympus_Mons'"):
        billing.time_zone(db, "Mars/Olympus_Mons")
    assert billing.time_zone(db, "Europe/Paris") == PARIS


def test_a_clients_usage_is_its_own_customers(db: Session, admin: Caller) -> None:
    mine, other = create_customer(db), create_customer(db)
    for customer in (mine, other):
        job_created_at(db, customer, datetime(2026, 1, 5, tzinfo=UTC))
    client = Caller(create_user(db, customer=mine))
    own = usage(db, client, None)
    assert own.customer_id == mine.id
    assert {row.customer_id for row in own.rows} == {mine.id}
    with pytest.raises(NotFound):
        usage(db, client, other.id)


def test_an_invoice_covers_its_month_in_the_zone_december_included(
    db: Session, admin: Caller
) -> None:
    customer = create_customer(db)
    invoice = billing.get_invoice(
        db, caller=admin, customer_id=customer.id, period="2025-12", tz="Europe/Paris"
    )
    assert invoice.period_start == datetime(2025, 12, 1, tzinfo=PARIS)
    assert invoice.period_end == datetime(2026, 1, 1, tzinfo=PARIS)
    assert (invoice.lines, invoice.total) == ([], Decimal(0))


def test_an_admin_must_name_the_customer_to_invoice(db: Session, admin: Caller) -> None:
    with pytest.raises(InvalidInput, match="customer_id is required"):
        billing.get_invoice(db, caller=admin, customer_id=None, period="2026-01")
    with pytest.raises(InvalidInput, match="years 1970 to 9998"):
        billing.get_invoice(db, caller=admin, customer_id=None, period="0000-01")
