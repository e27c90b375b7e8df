"""Field types shared by schemas, with the limits of the columns they end up in."""

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, EmailStr, StringConstraints

# PostgreSQL text cannot hold the NUL character: refuse it as invalid input, not a server error.
NO_NUL = r"^[^\x00]*$"

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)
]
CustomerName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH = 8, 128
Password = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
]
# Logging in with a password that could never have been set is simply wrong, not invalid.
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
Email = Annotated[EmailStr, AfterValidator(str.lower)]
# A script's own id for a job. Printable ASCII without spaces: safe in URLs, logs, spreadsheets.
ProviderJobId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]


_STARTS_WITH_A_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: Any) -> Any:
    """Text that starts with a date; pydantic would also read a number as a Unix time."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and not _STARTS_WITH_A_DATE.match(value)
    ):
        raise ValueError("expected an ISO 8601 datetime, such as 2026-01-31T12:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    # PostgreSQL takes offsets up to 15:59, Python up to 23:59; in UTC every offset is fine. At
    # the ends of Python's calendar (years 1 and 9999) the same instant may not exist in UTC.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


# A time in UTC; a naive one is read as UTC (query strings: a timezone is best given).
UtcDatetime = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]
# A time with its timezone (required), converted to UTC.
AwareUtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]
