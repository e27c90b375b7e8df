"""Periods: the intervals reports are cut into, the ranges a report may cover, and the arithmetic
of cutting them, in UTC or in a time zone. Billing and analytics both use it."""

import enum
import functools
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


# How far apart the zone's offset is sampled to find its transitions: no zone changes its
# offset twice within that.
_SAMPLE = timedelta(hours=6)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _offset(moment: datetime, zone: tzinfo) -> timedelta:
    return moment.astimezone(zone).utcoffset() or timedelta()


def _transition(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first instant in (before, after] with `after`'s offset, to the microsecond."""
    offset = _offset(before, zone)
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) // 2
        if _offset(middle, zone) == offset:
            before = middle
        else:
            after = middle
    return after


def uneven_buckets(
    start: datetime, end: datetime, zone: ZoneInfo, grain: timedelta
) -> list[datetime]:
    """The starts of the buckets of `grain` (counted from 2000-01-01 UTC) that overlap
    [start, end) and inside which the local date in `zone` changes: where the offset is no whole
    number of grains (as in some zones before 1980), or a transition falls inside one. A period
    cut in `zone` holds every other bucket whole."""
    first = (start - (start - _EPOCH) % grain).year
    return [
        at
        for year in range(first, min(end.year, YEARS[-1]) + 1)
        for at in _uneven_buckets_of_year(zone, year, grain)
        if start - grain < at < end
    ]


@functools.lru_cache(maxsize=4096)
def _uneven_buckets_of_year(zone: ZoneInfo, year: int, grain: timedelta) -> tuple[datetime, ...]:
    """uneven_buckets of one UTC year (a zone's rules never change for a process)."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    found: set[datetime] = set()

    def bucket(moment: datetime) -> datetime:
        return moment - (moment - _EPOCH) % grain

    def day_changes(segment_start: datetime, segment_end: datetime, offset: timedelta) -> None:
        """Midnights passed at a fixed offset; on the grain's grid when the offset is."""
        if offset % grain == timedelta():
            return
        local = (segment_start + offset).replace(tzinfo=None)
        midnight = datetime.combine(local.date() + timedelta(days=1), time())
        while (at := (midnight - offset).replace(tzinfo=UTC)) < segment_end:
            if at != bucket(at):
                found.add(bucket(at))
            midnight += timedelta(days=1)

    segment_start = point = start
    while point < end:
        following = min(point + _SAMPLE, end)
        if _offset(following, zone) != _offset(point, zone):
            change = _transition(point, following, zone)
            day_changes(segment_start, change, _offset(point, zone))
            before = (change - timedelta(microseconds=1)).astimezone(zone).date()
            if change != bucket(change) and before != change.astimezone(zone).date():
                found.add(bucket(change))
            segment_start = change
        point = following
    day_changes(segment_start, end, _offset(end - timedelta(microseconds=1), zone))
    return tuple(sorted(found))
