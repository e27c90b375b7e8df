"""Logging in and out: server-side sessions named by short-lived access tokens."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from app.internal.errors import Unauthorized
from app.internal.security import (
    InvalidToken,
    create_access_token,
    csrf_token_for,
    decode_access_token,
    spend_password_work,
    verify_password,
)
from app.models import User, UserSession
from app.services import login_throttle
from config import config

WRONG_CREDENTIALS = "Incorrect email or password"
NOT_AUTHENTICATED = "Not authenticated: log in again"
MAX_EMAIL_LENGTH = 320  # the column's


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class LoggedIn:
    user: User
    user_session: UserSession
    access: AccessToken
    csrf_token: str


def _now() -> datetime:
    return datetime.now(UTC)


def login(
    session: Session,
    *,
    email: str,
    password: str,
    client_address: str,
    user_agent: str | None = None,
) -> LoggedIn:
    """Check the credentials and start a session. Unknown email and wrong password fail alike,
    after the same hashing work, and are throttled alike (see `login_throttle`)."""
    now = _now()
    email = email.lower()
    if "\x00" in email or len(email) > MAX_EMAIL_LENGTH:
        # No account has it (and PostgreSQL cannot compare text holding NUL): nothing to count.
        spend_password_work(password)
        raise Unauthorized(WRONG_CREDENTIALS)
    client_address = login_throttle.normalized_address(client_address)
    login_throttle.refuse_if_throttled(session, email=email, client_address=client_address, now=now)
    user = session.scalar(
        select(User).options(joinedload(User.customer)).where(User.email == email)
    )
    if user is None:
        spend_password_work(password)
    if user is None or not (
        verify_password(password, user.password_hash) and user.may_authenticate
    ):
        login_throttle.record_failure(session, email=email, client_address=client_address, now=now)
        raise Unauthorized(WRONG_CREDENTIALS, keep_changes=True)
    login_throttle.forget_failures(session, email=email, client_address=client_address)
    user_session = UserSession(
        user_id=user.id,
        expires_at=now + timedelta(hours=config.settings.session_ttl_hours),
        last_seen_at=now,
        user_agent=(user_agent or "")[:255] or None,
    )
    session.add(user_session)
    session.flush()
    return LoggedIn(
        user=user,
        user_session=user_session,
        access=issue_access_token(user_session, now=now),
        csrf_token=csrf_token_for(user_session.id),
    )


def issue_access_token(user_session: UserSession, *, now: datetime) -> AccessToken:
    expires_at = min(
        now + timedelta(minutes=config.settings.access_token_ttl_minutes),
        user_session.expires_at,
    )
    token = create_access_token(
        user_id=user_session.user_id,
        session_id=user_session.id,
        issued_at=now,
        expires_at=expires_at,
    )
    return AccessToken(token=token, expires_at=expires_at)


@dataclass(frozen=True)
class Authenticated:
    user: User
    user_session: UserSession
    renewed: AccessToken | None


def authenticate_token(session: Session, *, token: str) -> Authenticated:
    """The live session and active user a token names; a token past half its life is renewed."""
    try:
        claims = decode_access_token(token)
    except InvalidToken:
        raise Unauthorized(NOT_AUTHENTICATED) from None
    now = _now()
    row = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .options(joinedload(User.customer))
        .where(UserSession.id == claims.session_id)
    ).first()
    if row is None:
        raise Unauthorized(NOT_AUTHENTICATED)
    user_session, user = row
    if (
        user_session.user_id != claims.user_id
        or user_session.revoked_at is not None
        or user_session.expires_at <= now
        or not user.may_authenticate
    ):
        raise Unauthorized(NOT_AUTHENTICATED)
    _touch(session, user_session, now)
    lifetime = claims.expires_at - claims.issued_at
    renewed = None
    if claims.expires_at - now < lifetime / 2 and claims.expires_at < user_session.expires_at:
        renewed = issue_access_token(user_session, now=now)
    return Authenticated(user=user, user_session=user_session, renewed=renewed)


def _touch(session: Session, user_session: UserSession, now: datetime) -> None:
    interval = timedelta(seconds=config.settings.activity_write_interval_seconds)
    if user_session.last_seen_at is None or user_session.last_seen_at <= now - interval:
        user_session.last_seen_at = now


def logout(session: Session, *, user_session: UserSession) -> None:
    user_session.revoked_at = _now()
    session.flush()


def revoke_all(
    session: Session, *, user_id: int, except_session: UserSession | None = None
) -> None:
    statement = (
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=_now())
        .execution_options(synchronize_session=False)
    )
    if except_session is not None:
        statement = statement.where(UserSession.id != except_session.id)
    session.execute(statement)
