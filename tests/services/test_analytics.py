"""The analytics service called directly: periods in UTC with their zeros, the customer a report
is narrowed to, and the funnel of a version nobody ran."""

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import Forbidden, InvalidInput, NotFound
from app.internal.periods import Interval
from app.models import Customer, JobConfiguration, JobStatus
from app.services import analytics
from app.services.access import Caller
from tests.helpers.factories import (
    create_admin,
    create_configuration,
    create_customer,
    create_job,
    create_user,
)

JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


@pytest.fixture
def admin(db: Session) -> Caller:
    return Caller(create_admin(db))


def add_job(
    db: Session, configuration: JobConfiguration, customer: Customer, created_at: datetime
) -> None:
    create_job(db, configuration=configuration, customer=customer, created_at=created_at)


def test_jobs_are_counted_per_utc_period_with_every_period_and_status_listed(
    db: Session, admin: Caller
) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    for day in (5, 5, 19):
        add_job(db, configuration, customer, datetime(2026, 1, day, 12, tzinfo=UTC))
    # From a Wednesday to the next month: the first and last weeks are partial.
    result = analytics.job_analytics(
        db,
        caller=admin,
        start=datetime(2026, 1, 7, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        interval=Interval.WEEK,
        customer_id=customer.id,
    )
    assert [(item.period_start.day, item.count) for item in result.by_period] == [
        (5, 0),  # the week of Monday January 5: its jobs were made before the range
        (12, 0),
        (19, 1),
        (26, 0),
    ]
    assert result.total == 1
    assert {item.status: item.count for item in result.by_status} == {
        status: int(status == JobStatus.PENDING) for status in JobStatus
    }
    assert [(item.tag, item.count) for item in result.by_configuration] == [(configuration.tag, 1)]


def test_a_client_sees_only_its_own_customers_jobs(db: Session, admin: Caller) -> None:
    configuration = create_configuration(db)
    mine, other = create_customer(db), create_customer(db)
    for customer in (mine, mine, other):
        add_job(db, configuration, customer, datetime(2026, 1, 10, tzinfo=UTC))
    client = Caller(create_user(db, customer=mine))
    start, end = JANUARY
    mine_only = analytics.job_analytics(
        db, caller=client, start=start, end=end, interval=Interval.MONTH, tag=configuration.tag
    )
    assert mine_only.total == 2
    everyone = analytics.job_analytics(
        db, caller=admin, start=start, end=end, interval=Interval.MONTH, tag=configuration.tag
    )
    assert everyone.total == 3
    with pytest.raises(NotFound):
        analytics.job_analytics(
            db, caller=client, start=start, end=end, interval=Interval.DAY, customer_id=other.id
        )


def test_the_funnel_of_jobs_with_no_events_lists_every_step_at_zero(
    db: Session, admin: Caller
) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    add_job(db, configuration, customer, datetime(2026, 1, 10, tzinfo=UTC))
    add_job(db, configuration, customer, datetime(2026, 2, 10, tzinfo=UTC))  # outside
    start, end = JANUARY
    funnel = analytics.step_funnel(
        db, caller=admin, tag=configuration.tag, version=None, start=start, end=end
    )
    assert (funnel.version, funnel.jobs) == (configuration.version, 1)
    assert [step.tag for step in funnel.steps] == [step.tag for step in configuration.steps]
    for step in funnel.steps:
        assert (step.jobs_reached, step.completions, step.errors) == (0, 0, 0)
        assert (step.error_rate, step.median_seconds, step.p95_seconds) == (None, None, None)


def test_ranges_are_checked_before_anything_is_read(db: Session, admin: Caller) -> None:
    start, end = JANUARY
    with pytest.raises(InvalidInput, match="'from' must be before 'to'"):
        analytics.step_funnel(db, caller=admin, tag="unknown", version=None, start=end, end=start)
    with pytest.raises(InvalidInput, match="at most 400 periods"):
        analytics.job_analytics(
            db,
            caller=admin,
            start=datetime(2020, 1, 1, tzinfo=UTC),
            end=datetime(2021, 6, 1, tzinfo=UTC),
            interval=Interval.DAY,
        )


def test_customer_analytics_are_for_admins_only(db: Session) -> None:
    start, end = JANUARY
    with pytest.raises(Forbidden):
        analytics.customer_analytics(db, caller=Caller(create_user(db)), start=start, end=end)
