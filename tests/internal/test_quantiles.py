"""The funnel's quantiles: buckets counted by PostgreSQL, read back within the stated accuracy."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Double, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias

from app.internal.quantiles import (
    GAMMA,
    RELATIVE_ACCURACY,
    RESOLUTION,
    bucket_key,
    bucket_value,
    quantiles,
)

FRACTIONS = [0.0, 0.05, 0.5, 0.95, 1.0]
seconds = st.one_of(
    st.floats(-1e4, 1e7, allow_nan=False),
    st.sampled_from([0.0, RESOLUTION, -RESOLUTION, RESOLUTION / 2, 1.0, 60.0]),
)


def unnested(values: list[float]) -> TableValuedAlias:
    return func.unnest(cast(values, ARRAY(Double))).table_valued("value").render_derived()


def counted(db: Session, values: list[float]) -> list[tuple[int, int]]:
    source = unnested(values)
    bucket = bucket_key(source.c.value).label("bucket")
    rows = db.execute(select(bucket, func.count()).select_from(source).group_by(bucket))
    return [(key, count) for key, count in rows]


def exact(db: Session, values: list[float]) -> list[float]:
    source = unnested(values)
    percentiles = func.percentile_cont(cast(FRACTIONS, ARRAY(Double))).within_group(source.c.value)
    return list(db.scalar(select(percentiles).select_from(source)) or [])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(seconds, min_size=1, max_size=300))
def test_quantiles_are_within_the_stated_accuracy_of_percentile_cont(
    db: Session, values: list[float]
) -> None:
    estimates = quantiles(counted(db, values), FRACTIONS)
    ordered = sorted(values)
    for fraction, estimate, truth in zip(FRACTIONS, estimates, exact(db, values), strict=True):
        position = fraction * (len(ordered) - 1)
        low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
        # Within the accuracy of the exact value, or of the larger neighbour across zero.
        scale = abs(truth) if low * high >= 0 else max(abs(low), abs(high))
        bound = RELATIVE_ACCURACY * scale + RESOLUTION
        assert estimate is not None
        assert abs(estimate - truth) <= bound * (1 + 1e-9), (fraction, estimate, truth)


@pytest.mark.parametrize("value", [RESOLUTION, 0.0123, 1.0, 59.9, 3600.0, 86_400.0 * 30])
def test_each_bucket_answers_within_the_accuracy_of_its_values(db: Session, value: float) -> None:
    for signed in (value, -value):
        [(key, count)] = counted(db, [signed])
        assert count == 1
        assert math.copysign(1, key) == math.copysign(1, signed)
        assert abs(bucket_value(key) - signed) <= RELATIVE_ACCURACY * value * (1 + 1e-9)
        # The next bucket away from zero holds values a factor GAMMA larger.
        outward = key + (1 if key > 0 else -1)
        assert bucket_value(outward) / bucket_value(key) == pytest.approx(GAMMA)


def test_near_zero_is_zero_and_nothing_counted_is_none(db: Session) -> None:
    assert counted(db, [0.0, RESOLUTION / 2, -RESOLUTION / 2]) == [(0, 3)]
    assert quantiles([(0, 3)], [0.5]) == [0.0]
    assert quantiles([], [0.5, 0.95]) == [None, None]
