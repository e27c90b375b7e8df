"""Housekeeping: deleting authentication state nothing can use any more, one bounded batch at a
time, so that each transaction stays short and a large backlog never locks much at once."""

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.orm import Session

from app.models import User, UserSession


def delete_dead_sessions(session: Session, *, now: datetime, limit: int) -> int:
    """Delete up to `limit` sessions that expired or were revoked; return how many went.

    A token naming a deleted session is refused exactly as one naming a revoked session is.
    """
    dead = (
        select(UserSession.id)
        .where(or_(UserSession.expires_at <= now, UserSession.revoked_at.is_not(None)))
        .limit(limit)
        # Another instance running the same task at the same moment takes other rows.
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        delete(UserSession)
        .where(UserSession.id.in_(dead.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount


def clear_stale_login_failures(
    session: Session, *, now: datetime, window: timedelta, limit: int
) -> int:
    """Forget the failed-login counts of up to `limit` accounts whose failure window has
    passed; return how many. Such a count no longer throttles anyone (the next failure
    starts a new window), so clearing it changes no answer."""
    stale = (
        select(User.id)
        .where(User.failed_login_window_started_at <= now - window)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        update(User)
        .where(User.id.in_(stale.scalar_subquery()))
        .values(failed_login_count=0, failed_login_window_started_at=None)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount
