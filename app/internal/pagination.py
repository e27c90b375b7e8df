"""Keyset (cursor) pagination: a page ends with an opaque cursor naming its last row's sort key,
and the next page starts strictly after it, so pages stay stable while rows are added."""

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.internal.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

RowT = TypeVar("RowT")

# The magnitudes PostgreSQL's numeric holds: from 10**131071 down to 10**-16383.
NUMERIC_EXPONENTS = range(-16383, 131072)


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps(
        [str(value) if isinstance(value, datetime | Decimal) else value for value in values]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, columns: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(raw, list) or len(raw) != len(columns):
            raise ValueError("wrong shape")
        return [_parse(value, column) for value, column in zip(raw, columns, strict=True)]
    # ArithmeticError: a time out of range in UTC, a number Decimal cannot read.
    except (ValueError, TypeError, ArithmeticError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidInput("Invalid cursor: pass the next_cursor of a previous page") from error


def _parse(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    """The cursor's value for `column`, if the column could hold it: a crafted cursor must not
    reach PostgreSQL with what it refuses (NUL, offsets past 15:59, numbers past its range)."""
    python_type = column.type.python_type
    if value is None:
        return None
    if python_type is datetime:
        return datetime.fromisoformat(value).astimezone(UTC)
    if python_type is Decimal:
        number = Decimal(value)
        if number.is_finite() and number.adjusted() in NUMERIC_EXPONENTS:
            return number
    if python_type is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if python_type is str and isinstance(value, str) and "\x00" not in value:
        return value
    raise ValueError(f"unexpected cursor value {value!r}")


def keyset_page(
    session: Session,
    statement: Select[RowT],
    *,
    order_by: Sequence[InstrumentedAttribute[Any]],
    descending: bool = False,
    limit: int,
    cursor: str | None,
) -> tuple[list[RowT], str | None]:
    """One page of `statement` ordered by `order_by` (unique together, all in one direction)."""
    key = tuple_(*order_by)
    if cursor is not None:
        after = tuple_(*decode_cursor(cursor, order_by))
        statement = statement.where(key < after if descending else key > after)
    ordering = [column.desc() if descending else column.asc() for column in order_by]
    rows = list(session.scalars(statement.order_by(*ordering).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor([getattr(last, column.key) for column in order_by])
