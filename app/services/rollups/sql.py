"""What the rollups' reads and writes share: the buckets' arithmetic, ranges of moments as
parameters, and the state that says how far the rollups reach (app/services/rollups/)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    DateTime,
    ScalarSelect,
    Select,
    bindparam,
    column,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from app.models import (
    RollupState,
)

DAY = timedelta(days=1)
# Where buckets are counted from (a Saturday midnight, UTC: days and shorter grains align).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MOMENTS = ARRAY(DateTime(timezone=True))


def floor_to(moment: datetime, grain: timedelta) -> datetime:
    return moment - (moment - EPOCH) % grain


def ceil_to(moment: datetime, grain: timedelta) -> datetime:
    floor = floor_to(moment, grain)
    return floor if floor == moment else floor + grain


def for_each(outer: Any, inner: Select[Any], name: str) -> Select[Any]:
    """`inner`, which refers to `outer`'s columns, run once per row of `outer`: a LATERAL
    subquery with OFFSET 0, which the planner may not merge into a join, so that each range or
    period is an index range scan whatever the tables' statistics say."""
    each = inner.offset(0).lateral(name)
    return select(*each.c).select_from(outer).join(each, true())


def moments(name: str, values: Sequence[datetime | None]) -> BindParameter[Any]:
    """A list of moments as one array parameter, so that the statement's cached form serves
    every list."""
    return bindparam(name, list(values), type_=_MOMENTS)


def ranges(*rows: tuple[datetime, datetime]) -> Select[tuple[datetime, datetime]]:
    """The given (lo, hi) ranges that are not empty."""
    pairs = (
        func.unnest(
            moments("range_starts", [lo for lo, _ in rows]),
            moments("range_ends", [hi for _, hi in rows]),
        )
        .table_valued(column("lo", DateTime(timezone=True)), column("hi", DateTime(timezone=True)))
        .render_derived()
    )
    return select(pairs.c.lo, pairs.c.hi).where(pairs.c.lo < pairs.c.hi)


def rolled_until() -> ScalarSelect[datetime | None]:
    """`rollup_state.rolled_until`, in the statement's own snapshot."""
    return select(RollupState.rolled_until).scalar_subquery()
