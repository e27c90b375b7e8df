"""The browser session's cookies: the access token (HttpOnly) and the CSRF token (readable)."""

from datetime import UTC, datetime

from fastapi import Response

from config import config

SESSION_COOKIE = "tracker_session"
CSRF_COOKIE = "tracker_csrf"


def _name(base: str) -> str:
    # __Host- cookies are only accepted when Secure, for Path=/ and with no Domain: they cannot
    # be set or overwritten by a sibling subdomain.
    return f"__Host-{base}" if config.settings.secure_cookies else base


def session_cookie_name() -> str:
    return _name(SESSION_COOKIE)


def csrf_cookie_name() -> str:
    return _name(CSRF_COOKIE)


def set_session_cookie(response: Response, *, token: str, expires_at: datetime) -> None:
    response.set_cookie(
        session_cookie_name(),
        token,
        max_age=max(int((expires_at - datetime.now(UTC)).total_seconds()), 0),
        path="/",
        secure=config.settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def set_csrf_cookie(response: Response, *, csrf_token: str, max_age: int) -> None:
    response.set_cookie(
        csrf_cookie_name(),
        csrf_token,
        max_age=max_age,
        path="/",
        secure=config.settings.secure_cookies,
        httponly=False,  # the web app reads it and echoes it in X-CSRF-Token
        samesite="lax",
    )


def clear_session_cookies(response: Response) -> None:
    for name in (session_cookie_name(), csrf_cookie_name()):
        response.delete_cookie(
            name, path="/", secure=config.settings.secure_cookies, samesite="lax"
        )
