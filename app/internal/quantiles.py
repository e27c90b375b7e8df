"""Quantiles from a histogram with logarithmic buckets (the DDSketch method).

The database counts values per bucket, a hash aggregate that scales to millions of rows, instead
of sorting them. A bucket spans [b, b * GAMMA); the value it answers for is 2b * GAMMA /
(1 + GAMMA), within RELATIVE_ACCURACY of anything in it. So a quantile read from the counts is
within RELATIVE_ACCURACY (0.5%) of the exact one, or within RESOLUTION of it near zero. That holds
when the two values it is interpolated between have one sign; between a negative and a positive
one, the error is within RELATIVE_ACCURACY of the larger of them.
"""

import math
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Integer, case, cast, func
from sqlalchemy.orm import InstrumentedAttribute

RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
RESOLUTION = 0.001  # values closer to zero than this count as zero

# Bucket k > 0 holds [RESOLUTION * GAMMA^(k-1), RESOLUTION * GAMMA^k); -k the negatives (a step
# reported as done before its job was created, by a client clock); 0 the values near zero. Keys
# sort as their values do.


def bucket_key(value: ColumnElement[float] | InstrumentedAttribute[float]) -> ColumnElement[int]:
    """The SQL expression of the bucket of `value`."""
    magnitude = func.abs(value)
    index = func.floor(func.ln(magnitude / RESOLUTION) / math.log(GAMMA)) + 1
    return case(
        (magnitude < RESOLUTION, 0),
        else_=cast(func.sign(value) * index, Integer),
    )


def bucket_value(key: int) -> float:
    """The value a bucket answers for."""
    if key == 0:
        return 0.0
    magnitude = RESOLUTION * GAMMA ** abs(key) * 2 / (1 + GAMMA)
    return math.copysign(magnitude, key)


def quantiles(counts: Iterable[tuple[int, int]], fractions: Sequence[float]) -> list[float | None]:
    """The quantiles (as PostgreSQL's percentile_cont interpolates them) of the values counted
    by bucket key; None for each when nothing was counted."""
    buckets = sorted((key, count) for key, count in counts if count > 0)
    total = sum(count for _, count in buckets)
    if total == 0:
        return [None for _ in fractions]

    def ranked(rank: int) -> float:
        """The value at a 0-based rank."""
        seen = 0
        for key, count in buckets:
            seen += count
            if rank < seen:
                return bucket_value(key)
        raise AssertionError("rank past the last bucket")

    answers: list[float | None] = []
    for fraction in fractions:
        position = fraction * (total - 1)
        below = math.floor(position)
        low, high = ranked(below), ranked(min(below + 1, total - 1))
        answers.append(low + (position - below) * (high - low))
    return answers
