import csv
import io
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from app.dependencies import Reader, SessionDep
from app.internal.periods import YEARS, YEARS_IN_UTC, Interval
from app.schemas.base import Schema
from app.schemas.billing import (
    DateOrDatetime,
    Invoice,
    InvoiceLine,
    ResponseFormat,
    TimeZoneName,
    Usage,
    UsageRow,
    YearMonth,
)
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL
from app.services import billing

router = APIRouter(
    prefix="/billing", tags=["billing"], responses=error_responses(401, 403, 404, 422)
)

CSV_MEDIA_TYPE = "text/csv"


def _csv_response(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"{description}; as CSV with Accept: text/csv or format=csv",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    }


def _wants_csv(format_: ResponseFormat | None, accept: str | None) -> bool:
    """`format` wins; else the Accept header, when it prefers text/csv to JSON."""
    if format_ is not None:
        return format_ == ResponseFormat.CSV
    quality: dict[str, float] = {}
    for item in (accept or "").split(","):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        q = next((p[2:] for p in parameters if p.startswith("q=")), "1")
        try:
            quality.setdefault(media_type.lower(), float(q))
        except ValueError:
            continue
    json_quality = max(quality.get("application/json", 0), quality.get("*/*", 0))
    return quality.get(CSV_MEDIA_TYPE, 0) > json_quality


# A cell starting with one of these is a formula to a spreadsheet; a customer named
# "=HYPERLINK(...)" must stay text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv(items: Sequence[Schema], columns: Sequence[str], filename: str) -> Response:
    """One header row, then one row per item, in the order of `columns`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        values = item.model_dump(mode="json", by_alias=True)
        writer.writerow(_cell(values[column]) for column in columns)
    return Response(
        buffer.getvalue(),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


Format = Annotated[
    ResponseFormat | None,
    Query(alias="format", description="csv or json; default: by the Accept header, else json"),
]
Accept = Annotated[str | None, Header(include_in_schema=False)]


@router.get("/usage", response_model=Usage, responses=_csv_response("Usage"))
def read_usage(
    session: SessionDep,
    caller: Reader,
    from_: Annotated[
        DateOrDatetime,
        Query(alias="from", description=f"Included; a date is midnight in tz. {YEARS_IN_UTC}"),
    ],
    to: Annotated[
        DateOrDatetime, Query(description=f"Excluded; a date is midnight in tz. {YEARS_IN_UTC}")
    ],
    interval: Interval = Interval.MONTH,
    customer_id: int | None = None,
    tag: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Configuration tag")
    ] = None,
    tz: TimeZoneName = "UTC",
    format_: Format = None,
    accept: Accept = None,
) -> Usage | Response:
    """Usage per customer and period (empty periods are left out), with totals."""
    usage = billing.get_usage(
        session,
        caller=caller,
        start=from_,
        end=to,
        interval=interval,
        tz=tz,
        customer_id=customer_id,
        tag=tag,
    )
    if not _wants_csv(format_, accept):
        return usage
    filename = f"usage-{usage.from_:%Y%m%d}-{usage.to:%Y%m%d}-{interval.value}.csv"
    return _csv(usage.rows, list(UsageRow.model_fields), filename)


@router.get("/invoice", response_model=Invoice, responses=_csv_response("The invoice"))
def read_invoice(
    session: SessionDep,
    caller: Reader,
    period: Annotated[
        YearMonth,
        Query(description=f"The month, YYYY-MM, of a year from {YEARS[0]} to {YEARS[-1]}"),
    ],
    customer_id: Annotated[
        int | None, Query(description="Required for admins; a client's own by default")
    ] = None,
    tz: TimeZoneName = "UTC",
    format_: Format = None,
    accept: Accept = None,
) -> Invoice | Response:
    """A customer's invoice for one month: one line per configuration version and step."""
    invoice = billing.get_invoice(
        session, caller=caller, customer_id=customer_id, period=period, tz=tz
    )
    if not _wants_csv(format_, accept):
        return invoice
    filename = f"invoice-{invoice.customer_id}-{invoice.period}.csv"
    return _csv(invoice.lines, list(InvoiceLine.model_fields), filename)
