"""The sessions service: an unknown email and a wrong password fail alike and are both counted
by the throttle; a login's token names a live session, which logout and "log out everywhere"
end, and an inactive user's token is refused."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.internal.errors import Unauthorized
from app.models import LoginFailure
from app.services import sessions
from tests.helpers.factories import PASSWORD, create_user, unique


def failures(db: Session, email: str) -> int:
    return db.scalar(select(func.count()).where(LoginFailure.email == email)) or 0


def test_an_unknown_email_and_a_wrong_password_fail_alike_and_both_count(db: Session) -> None:
    user = create_user(db)
    unknown = unique("nobody") + "@example.com"
    answers = []
    for email, password in ((unknown, PASSWORD), (user.email, "not-the-password")):
        with pytest.raises(Unauthorized) as refused:
            sessions.login(db, email=email, password=password, client_address="203.0.113.7")
        answers.append(refused.value.detail)
        assert failures(db, email) == 1
    assert answers == [sessions.WRONG_CREDENTIALS] * 2
    # A login that succeeds forgets that address's failures.
    sessions.login(db, email=user.email.upper(), password=PASSWORD, client_address="203.0.113.7")
    assert failures(db, user.email) == 0


def test_a_token_names_a_live_session_until_logout_or_revocation(db: Session) -> None:
    user = create_user(db)

    def log_in() -> sessions.LoggedIn:
        return sessions.login(
            db, email=user.email, password=PASSWORD, client_address="203.0.113.7", user_agent="t"
        )

    first, second, third = log_in(), log_in(), log_in()
    authenticated = sessions.authenticate_token(db, token=first.access.token)
    assert (authenticated.user.id, authenticated.user_session.id, authenticated.renewed) == (
        user.id,
        first.user_session.id,
        None,
    )
    sessions.logout(db, user_session=first.user_session)
    with pytest.raises(Unauthorized, match="log in again"):
        sessions.authenticate_token(db, token=first.access.token)

    sessions.revoke_all(db, user_id=user.id, except_session=third.user_session)
    db.expire_all()
    with pytest.raises(Unauthorized):
        sessions.authenticate_token(db, token=second.access.token)
    assert sessions.authenticate_token(db, token=third.access.token).user.id == user.id

    user.is_active = False
    db.flush()
    with pytest.raises(Unauthorized):
        sessions.authenticate_token(db, token=third.access.token)
    with pytest.raises(Unauthorized):
        sessions.authenticate_token(db, token="not a token")
