"""Housekeeping: dead sessions, stale failed logins and task runs past their retention go, at
most `limit` a call; live ones stay."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import LoginFailure, TaskOutcome, TaskRun, UserSession
from app.services import housekeeping
from tests.helpers.factories import create_user, unique

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_expired_and_revoked_sessions_go_in_batches_and_live_ones_stay(db: Session) -> None:
    user = create_user(db)
    expired = [UserSession(user_id=user.id, expires_at=NOW - HOUR) for _ in range(3)]
    revoked = UserSession(user_id=user.id, expires_at=NOW + HOUR, revoked_at=NOW - HOUR)
    live = UserSession(user_id=user.id, expires_at=NOW + HOUR)
    db.add_all([*expired, revoked, live])
    db.flush()

    assert housekeeping.delete_dead_sessions(db, now=NOW, limit=3) == 3
    assert housekeeping.delete_dead_sessions(db, now=NOW, limit=3) == 1
    assert housekeeping.delete_dead_sessions(db, now=NOW, limit=3) == 0
    left = db.scalars(select(UserSession.id).where(UserSession.user_id == user.id)).all()
    assert left == [live.id]


def test_failed_logins_older_than_the_window_go_and_recent_ones_stay(db: Session) -> None:
    email = unique("who") + "@example.com"
    window = timedelta(minutes=15)
    for age in (window + HOUR, window, window - timedelta(seconds=1)):
        db.add(LoginFailure(email=email, client_address="203.0.113.7", failed_at=NOW - age))
    db.flush()

    assert housekeeping.clear_stale_login_failures(db, now=NOW, window=window, limit=1) == 1
    assert housekeeping.clear_stale_login_failures(db, now=NOW, window=window, limit=10) == 1
    kept = db.scalars(select(LoginFailure.failed_at).where(LoginFailure.email == email)).all()
    assert kept == [NOW - window + timedelta(seconds=1)]


def test_task_runs_past_their_retention_go_and_recent_ones_stay(db: Session) -> None:
    def run(started_at: datetime) -> TaskRun:
        return TaskRun(
            task="auth_cleanup",
            started_at=started_at,
            finished_at=started_at,
            outcome=TaskOutcome.SUCCEEDED,
            counts={},
        )

    old = [run(NOW - timedelta(days=31)) for _ in range(2)]
    recent = run(NOW - timedelta(days=29))
    db.add_all([*old, recent])
    db.flush()

    before = NOW - timedelta(days=30)
    assert housekeeping.delete_old_task_runs(db, before=before, limit=1) == 1
    assert housekeeping.delete_old_task_runs(db, before=before, limit=10) == 1
    assert db.scalars(select(TaskRun.id)).all() == [recent.id]
