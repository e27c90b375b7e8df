"""Periods: intervals, range limits and their checks, and the arithmetic billing and analytics
share."""

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, func, literal, select
from sqlalchemy.orm import Session

from app.internal.errors import InvalidInput
from app.internal.periods import (
    MAX_PERIODS,
    MAX_RANGE,
    Interval,
    check_period_count,
    check_range,
    check_span,
    check_years,
    instant,
    local_midnight,
    next_period,
    period_count,
    period_start,
    period_starts,
)

PARIS = ZoneInfo("Europe/Paris")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "day", "first", "following"),
    [
        (Interval.DAY, date(2026, 3, 4), date(2026, 3, 4), date(2026, 3, 5)),
        (Interval.WEEK, date(2026, 3, 4), date(2026, 3, 2), date(2026, 3, 9)),  # Monday
        (Interval.WEEK, date(2026, 3, 2), date(2026, 3, 2), date(2026, 3, 9)),
        (Interval.MONTH, date(2026, 3, 31), date(2026, 3, 1), date(2026, 4, 1)),
        (Interval.MONTH, date(2025, 12, 15), date(2025, 12, 1), date(2026, 1, 1)),
        (Interval.DAY, date(2028, 2, 28), date(2028, 2, 28), date(2028, 2, 29)),
    ],
)
def test_a_period_starts_on_its_first_day_and_the_next_follows_it(
    interval: Interval, day: date, first: date, following: date
) -> None:
    assert period_start(day, interval) == first
    assert next_period(first, interval) == following


def test_period_counts_include_partial_periods_at_both_ends() -> None:
    start, end = utc(2026, 1, 31, 12), utc(2026, 3, 1, 0, 0, 1)
    assert period_count(start, end, Interval.DAY) == 30  # Jan 31, 28 days of February, Mar 1
    assert period_count(start, end, Interval.WEEK) == 5  # the weeks of Jan 26 .. Feb 23
    assert period_count(start, end, Interval.MONTH) == 3
    # The end is excluded: a range ending at midnight does not touch the next day.
    assert period_count(utc(2026, 1, 1), utc(2026, 1, 2), Interval.DAY) == 1


def test_periods_are_counted_in_the_zone_they_are_cut_in() -> None:
    # 23:30 UTC on the 31st is already February in Paris.
    start, end = utc(2026, 1, 31, 23, 30), utc(2026, 2, 1, 0, 30)
    assert period_count(start, end, Interval.MONTH) == 2
    assert period_count(start, end, Interval.MONTH, PARIS) == 1


@given(
    start=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9990, 1, 1)),
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=MAX_RANGE),
    interval=st.sampled_from(Interval),
)
def test_period_starts_are_every_period_overlapping_the_range(
    start: datetime, length: timedelta, interval: Interval
) -> None:
    start = start.replace(tzinfo=UTC)
    end = start + length
    if period_count(start, end, interval) > MAX_PERIODS:
        with pytest.raises(InvalidInput, match=f"at most {MAX_PERIODS} periods per request"):
            period_starts(start, end, interval)
        return
    starts = period_starts(start, end, interval)
    assert starts[0] <= start < end
    assert all(moment < end for moment in starts)
    following = datetime.combine(next_period(starts[-1].date(), interval), starts[-1].timetz())
    assert following >= end
    for earlier, later in itertools.pairwise(starts):
        assert later.date() == next_period(earlier.date(), interval)


def test_at_most_max_periods_are_allowed() -> None:
    start = utc(2025, 1, 1)
    allowed = start + timedelta(days=MAX_PERIODS)
    assert len(period_starts(start, allowed, Interval.DAY)) == MAX_PERIODS
    with pytest.raises(InvalidInput) as refused:
        check_period_count(start, allowed + timedelta(seconds=1), Interval.DAY)
    assert str(refused.value) == (
        "The range covers 401 days: at most 400 periods per request "
        "(ask for a longer interval, or a shorter range)"
    )


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (utc(2026, 2, 1), utc(2026, 1, 1), "'from' must be before 'to'"),
        (utc(2026, 1, 1), utc(2026, 1, 1), "'from' must be before 'to'"),
        (utc(2020, 1, 1), utc(2025, 1, 3), "The range may span at most 5 years (1827 days)"),
    ],
)
def test_a_range_must_be_ordered_and_at_most_five_years(
    start: datetime, end: datetime, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_span(start, end)
    assert str(refused.value) == message


def test_five_years_with_their_leap_days_are_allowed() -> None:
    check_span(utc(2020, 1, 1), utc(2025, 1, 1))  # 1,827 days
    check_span(utc(2020, 1, 1), utc(2020, 1, 1) + MAX_RANGE)


def test_dates_must_fall_in_the_years_with_data() -> None:
    check_years(1970, 9998)
    for year in (1969, 9999, 0):
        with pytest.raises(InvalidInput, match="Dates must fall in the years 1970 to 9998"):
            check_years(2026, year)
    with pytest.raises(InvalidInput, match="years 1970 to 9998"):
        check_range(datetime(1969, 12, 31, tzinfo=UTC), utc(1970, 1, 2))


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Paris", date(2026, 1, 15)),
        ("Europe/Paris", date(2026, 3, 29)),  # the night clocks go forward (at 02:00)
        ("America/Sao_Paulo", date(2018, 11, 4)),  # midnight skipped: clocks went to 01:00
        ("America/Havana", date(2020, 11, 1)),  # midnight twice: clocks went back at 01:00
        ("Pacific/Kiritimati", date(2026, 6, 1)),  # UTC+14
    ],
)
def test_local_midnight_is_the_instant_postgresql_reads(db: Session, zone: str, day: date) -> None:
    local = datetime.combine(day, datetime.min.time())
    read_by_postgresql = db.scalar(
        select(func.timezone(zone, literal(local, DateTime()), type_=DateTime(timezone=True)))
    )
    assert local_midnight(day, ZoneInfo(zone)) == read_by_postgresql


def test_an_instant_is_a_datetime_in_utc_or_a_date_at_midnight_in_the_zone() -> None:
    assert instant(date(2026, 7, 1), PARIS) == utc(2026, 6, 30, 22)
    given_time = datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert instant(given_time, PARIS) == utc(2026, 7, 1, 3)
    assert instant(given_time, PARIS).tzinfo == UTC
