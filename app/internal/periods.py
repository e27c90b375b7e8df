"""Periods: the intervals reports are cut into, the ranges a report may cover, and the arithmetic
of cutting them, in UTC or in a time zone. Billing and analytics both use it."""

import enum
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from app.internal.errors import InvalidInput


class Interval(enum.StrEnum):
    DAY = "day"
    WEEK = "week"  # starts on Monday
    MONTH = "month"


MAX_PERIODS = 400
MAX_YEARS = 5
# Five calendar years span at most 1,827 days (two of them leap years).
MAX_RANGE = timedelta(days=365 * MAX_YEARS + 2)
YEARS = range(1970, 9999)  # no data is older; Python's dates end with 9999
YEARS_IN_UTC = f"Years {YEARS[0]} to {YEARS[-1]}, in UTC."


def check_years(*years: int) -> None:
    """Every year is in YEARS, so that the periods around its days, and the start of the next
    one, exist."""
    if any(year not in YEARS for year in years):
        raise InvalidInput(f"Dates must fall in the years {YEARS[0]} to {YEARS[-1]}")


def check_span(start: datetime, end: datetime) -> None:
    """[start, end) is a non-empty range of at most MAX_YEARS years."""
    if start >= end:
        raise InvalidInput("'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise InvalidInput(f"The range may span at most {MAX_YEARS} years ({MAX_RANGE.days} days)")


def check_range(start: datetime, end: datetime) -> None:
    """[start, end) is a non-empty range of at most MAX_YEARS years, in YEARS."""
    check_years(start.year, end.year)
    check_span(start, end)


def period_start(day: date, interval: Interval) -> date:
    """The first day of the period that holds `day`."""
    if interval == Interval.WEEK:
        return day - timedelta(days=day.weekday())
    if interval == Interval.MONTH:
        return day.replace(day=1)
    return day


def next_period(first_day: date, interval: Interval) -> date:
    """The first day of the period after the one starting on `first_day`."""
    if interval == Interval.MONTH:
        return first_day.replace(
            year=first_day.year + first_day.month // 12, month=first_day.month % 12 + 1
        )
    return first_day + timedelta(days=7 if interval == Interval.WEEK else 1)


def period_count(start: datetime, end: datetime, interval: Interval, zone: tzinfo = UTC) -> int:
    """How many periods, cut at midnight in `zone`, overlap [start, end)."""
    first = period_start(start.astimezone(zone).date(), interval)
    last = period_start((end - timedelta(microseconds=1)).astimezone(zone).date(), interval)
    if interval == Interval.MONTH:
        return (last.year - first.year) * 12 + last.month - first.month + 1
    days = (last - first).days
    return days // 7 + 1 if interval == Interval.WEEK else days + 1


def check_period_count(
    start: datetime, end: datetime, interval: Interval, zone: tzinfo = UTC
) -> None:
    """[start, end) overlaps at most MAX_PERIODS periods of `interval`."""
    periods = period_count(start, end, interval, zone)
    if periods > MAX_PERIODS:
        raise InvalidInput(
            f"The range covers {periods} {interval.value}s: at most {MAX_PERIODS} periods per "
            "request (ask for a longer interval, or a shorter range)"
        )


def period_starts(start: datetime, end: datetime, interval: Interval) -> list[datetime]:
    """The start (a UTC midnight) of every period of UTC days overlapping [start, end), after
    checking the range and its number of periods."""
    check_range(start, end)
    check_period_count(start, end, interval)
    days = [period_start(start.astimezone(UTC).date(), interval)]
    for _ in range(period_count(start, end, interval) - 1):
        days.append(next_period(days[-1], interval))
    return [datetime.combine(day, time(), UTC) for day in days]


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """Midnight at the start of `day` in `zone`, in UTC, read as PostgreSQL reads local times
    (so that it matches the periods it cuts): where midnight happens twice, or not at all, the
    later of the two candidate instants."""
    first = datetime.combine(day, time(), zone)
    return max(first.astimezone(UTC), first.replace(fold=1).astimezone(UTC))


def instant(value: datetime | date, zone: ZoneInfo) -> datetime:
    """A datetime as it is (in UTC); a date as its midnight in `zone`."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return local_midnight(value, zone)
