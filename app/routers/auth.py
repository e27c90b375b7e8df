from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from app.cookies import clear_session_cookies, set_csrf_cookie, set_session_cookie
from app.dependencies import CurrentUser, SessionDep
from app.schemas.auth import LoginPublic, LoginRequest, TokenPublic
from app.schemas.error import error_response, error_responses
from app.schemas.user import UserPublic
from app.services import sessions
from config import config

router = APIRouter(prefix="/auth", tags=["auth"])

CREDENTIAL_ERRORS: dict[int | str, dict[str, object]] = {
    **error_responses(400),
    status.HTTP_401_UNAUTHORIZED: error_response("Wrong credentials"),
    status.HTTP_429_TOO_MANY_REQUESTS: error_response(
        "Too many failed logins for this account; see Retry-After"
    ),
}


@router.post("/login", response_model=LoginPublic, responses=CREDENTIAL_ERRORS)
def login(
    session: SessionDep, request: Request, response: Response, credentials: LoginRequest
) -> LoginPublic:
    """Log in from a browser: sets the session cookie (HttpOnly) and the CSRF cookie."""
    logged_in = sessions.login(
        session,
        email=credentials.email,
        password=credentials.password,
        user_agent=request.headers.get("user-agent"),
    )
    set_session_cookie(
        response, token=logged_in.access.token, expires_at=logged_in.access.expires_at
    )
    set_csrf_cookie(
        response,
        csrf_token=logged_in.csrf_token,
        max_age=config.settings.session_ttl_hours * 3600,
    )
    response.headers["Cache-Control"] = "no-store"
    return LoginPublic(
        user=UserPublic.model_validate(logged_in.user),
        csrf_token=logged_in.csrf_token,
        expires_at=logged_in.access.expires_at,
    )


@router.post("/token", response_model=TokenPublic, responses=CREDENTIAL_ERRORS)
def create_token(
    session: SessionDep,
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenPublic:
    """OAuth2 password flow (username is the email): a bearer token for non-browser clients."""
    logged_in = sessions.login(
        session,
        email=form.username,
        password=form.password,
        user_agent=request.headers.get("user-agent"),
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenPublic(access_token=logged_in.access.token, expires_at=logged_in.access.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401, 403))
def logout(session: SessionDep, caller: CurrentUser, response: Response) -> None:
    """End this session and clear its cookies."""
    assert caller.session is not None
    sessions.logout(session, user_session=caller.session)
    clear_session_cookies(response)


@router.post(
    "/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401, 403)
)
def logout_all(session: SessionDep, caller: CurrentUser, response: Response) -> None:
    """End every session of yours, on every device."""
    sessions.revoke_all(session, user_id=caller.user.id)
    clear_session_cookies(response)
