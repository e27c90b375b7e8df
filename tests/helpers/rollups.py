"""Rolling up inside a test's transaction, and reading as if nothing were rolled up."""

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import FunnelRollupMark, RollupState, UsageRollupMark
from app.services import rollups

T = TypeVar("T")


def roll_up(db: Session, *, now: datetime) -> None:
    """What the roll_up_periods task does, in the test's one transaction (so no writer can be
    in flight and the wait for writers is moot): close, roll forward, roll marked periods."""
    closed = rollups.close_periods(db, now=now)
    while rollups.roll_forward(db, until=closed) is not None:
        pass
    while rollups.roll_marked(db, limit=1000):
        pass


def live(db: Session, read: Callable[[], T]) -> T:
    """`read()` from the per-step tables alone: as it would answer with nothing rolled up."""
    with db.begin_nested() as savepoint:
        db.execute(update(RollupState).values(rolled_until=None))
        answer = read()
        savepoint.rollback()
    return answer


def mark_count(db: Session) -> int:
    return sum(
        db.scalar(select(func.count()).select_from(model)) or 0
        for model in (UsageRollupMark, FunnelRollupMark)
    )
