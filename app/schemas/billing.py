"""Billing reports: usage per customer and period, and invoices. Money is exact: decimals with
4 places, written as strings in JSON and CSV."""

import enum
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, TypeAdapter

from app.internal.periods import Interval
from app.schemas.base import Schema

MONEY_PLACES = Decimal("0.0001")


def _four_places(value: Decimal) -> Decimal:
    return value.quantize(MONEY_PLACES)


Money = Annotated[Decimal, AfterValidator(_four_places)]


class ResponseFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ].+")
# An unencoded "+" in a query string arrives as a space: "...T00:00:00 13:00" meant "+13:00".
_SPACE_FOR_PLUS = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})$")
_aware_datetime = TypeAdapter(AwareDatetime)


def _date_or_aware_datetime(value: Any) -> Any:
    """A date alone (YYYY-MM-DD), or a full ISO 8601 datetime with its offset; nothing looser
    (no bare numbers read as Unix times, no naive datetimes)."""
    if not isinstance(value, str):
        return value
    if _DATE.fullmatch(value):
        return date.fromisoformat(value)
    if _DATETIME.fullmatch(value):
        return _aware_datetime.validate_python(_SPACE_FOR_PLUS.sub(r"\1+\2", value))
    raise ValueError(
        "expected a date (2026-01-31) or a datetime with its offset (2026-01-31T00:00Z)"
    )


DateOrDatetime = Annotated[AwareDatetime | date, BeforeValidator(_date_or_aware_datetime)]
# The document also states the years billing.YEARS allows, 1970 to 9998 (a test holds the two
# together); the server checks them itself, to say so in its own words.
YEAR_MONTH_PATTERN = r"^(19[7-9]\d|[2-8]\d{3}|9[0-8]\d{2}|99[0-8]\d|999[0-8])-(0[1-9]|1[0-2])$"
YearMonth = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
        examples=["2026-01"],
        json_schema_extra={"pattern": YEAR_MONTH_PATTERN},
    ),
]
TimeZoneName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="An IANA time zone (Europe/Paris); periods start at midnight there.",
    ),
]


class UsageFigures(Schema):
    jobs_started: int = Field(description="Jobs created in the period.")
    jobs_completed: int = Field(description="Jobs whose last step was completed in the period.")
    jobs_failed: int = Field(description="Jobs now failed whose last event came in the period.")
    steps_completed: int = Field(description="Steps completed (first completions) in the period.")
    points: int = Field(description="Points of those steps.")
    cost: Money = Field(description="Cost of those steps: what the period bills.")


class UsageKey(Schema):
    period_start: datetime = Field(description="Start of the period, in the requested zone.")
    customer_id: int
    customer_name: str


# Pydantic lists the fields of the last base first: period and customer, then the figures.
class UsageRow(UsageFigures, UsageKey):
    pass


class Usage(Schema):
    """Usage per customer and period; periods with nothing in them are left out."""

    from_: datetime = Field(alias="from", description="Start of the range (included).")
    to: datetime = Field(description="End of the range (excluded).")
    interval: Interval
    tz: str
    customer_id: int | None
    tag: str | None
    rows: list[UsageRow] = Field(description="Ordered by period, then customer.")
    totals: UsageFigures


class InvoiceLine(Schema):
    tag: str = Field(description="The job configuration's tag.")
    version: int = Field(description="The configuration version the jobs were pinned to.")
    configuration_name: str
    step_position: int
    step_tag: str
    step_name: str
    quantity: int = Field(description="Completions of this step in the month.")
    unit_cost: Money
    amount: Money = Field(description="quantity * unit_cost")


class Invoice(Schema):
    customer_id: int
    customer_name: str
    period: str = Field(description="The month billed, YYYY-MM.")
    tz: str
    period_start: datetime = Field(description="Start of the month (included), in tz.")
    period_end: datetime = Field(description="Start of the next month (excluded), in tz.")
    lines: list[InvoiceLine] = Field(
        description="Ordered by configuration tag, version and step position."
    )
    total: Money
