"""Housekeeping: deleting authentication state nothing can use any more, and task runs past
their retention, one bounded batch at a time, so that each transaction stays short and a large
backlog never locks much at once."""

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, or_, select
from sqlalchemy.orm import Session

from app.models import LoginFailure, TaskRun, UserSession


def delete_dead_sessions(session: Session, *, now: datetime, limit: int) -> int:
    """Delete up to `limit` sessions that expired or were revoked; return how many went.

    A token naming a deleted session is refused exactly as one naming a revoked session is.
    """
    dead = or_(UserSession.expires_at <= now, UserSession.revoked_at.is_not(None))
    return _delete_some(session, UserSession, dead, limit=limit)


def clear_stale_login_failures(
    session: Session, *, now: datetime, window: timedelta, limit: int
) -> int:
    """Delete up to `limit` failed logins older than the throttle's window; return how many
    went. Such a failure no longer counts against anyone, so deleting it changes no answer."""
    stale = LoginFailure.failed_at <= now - window
    return _delete_some(session, LoginFailure, stale, limit=limit)


def delete_old_task_runs(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` task runs that started before `before`; return how many went."""
    return _delete_some(session, TaskRun, TaskRun.started_at < before, limit=limit)


def _delete_some(
    session: Session,
    model: type[UserSession] | type[LoginFailure] | type[TaskRun],
    condition: ColumnElement[bool],
    *,
    limit: int,
) -> int:
    some = (
        select(model.id)
        .where(condition)
        .limit(limit)
        # Another instance running the same task at the same moment takes other rows.
        .with_for_update(skip_locked=True)
        # Materialized: as a subquery of the DELETE, PostgreSQL may run it again per row and
        # so take more than `limit` rows.
        .cte("some")
        .prefix_with("MATERIALIZED")
    )
    result = session.execute(
        delete(model).where(model.id == some.c.id).execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount
