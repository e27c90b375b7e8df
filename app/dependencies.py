"""Dependencies shared by the routers, each named once as an `Annotated` alias.

Authentication comes three ways: the session cookie (browsers; unsafe methods need the CSRF
token), `Authorization: Bearer` (the same access token, for other clients), and `X-API-Key`
(scripts; narrowed by the key's scopes).
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from app.cookies import session_cookie_name, set_session_cookie
from app.internal.errors import DomainError, Forbidden, Unauthorized
from app.internal.pagination import MAX_LIMIT
from app.internal.security import csrf_token_matches
from app.middleware import client_address_for
from app.models import Scope
from app.services import api_keys, sessions
from app.services.access import Caller, require_admin
from config import config

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
T = TypeVar("T")


def end_transaction(session: Session, error: BaseException | None) -> None:
    """Commit if the route succeeded; roll back if anything failed, unless a refusal asks to
    keep its changes (`DomainError.keep_changes`)."""
    if error is None or (isinstance(error, DomainError) and error.keep_changes):
        session.commit()
    else:
        session.rollback()


def unit_of_work(session: Session) -> Iterator[Session]:
    """Yield `session`; commit if the route succeeds, roll back if anything fails."""
    try:
        yield session
    except BaseException as error:
        end_transaction(session, error)
        raise
    end_transaction(session, None)


def _end_and_close(session: Session, error: BaseException | None) -> None:
    try:
        end_transaction(session, error)
    finally:
        session.close()


def _transaction_pending(session: Session) -> bool:
    return session.in_transaction() or bool(session.new or session.dirty or session.deleted)


async def _finish(session: Session, error: BaseException | None) -> None:
    if not _transaction_pending(session):
        session.close()  # no connection held, no I/O: no trip to the thread pool
        return
    # Shielded, so that a client that goes away cannot leave the connection in a transaction.
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(_end_and_close, session, error)


async def get_db() -> AsyncIterator[Session]:
    """A session for one request. Its scope is the route function, so the commit happens before
    the response is sent: a client that sees success can count on the data being stored.

    Opening a session does no I/O (it connects on its first statement, in the route's thread),
    so only the end of the transaction takes a trip to the thread pool, and none when the route
    ended it already (`in_one_trip`) or never used the database.
    """
    session = config.database.SessionLocal()
    try:
        yield session
    except BaseException as error:
        await _finish(session, error)
        raise
    await _finish(session, None)


async def in_one_trip(session: Session, work: Callable[[], T]) -> T:
    """Run `work` (the route's database work) in the thread pool and end the request's
    transaction in the same trip, as `get_db` would end it: one trip instead of two, for the
    event hot path. Nothing may use the session after it."""

    def work_and_end() -> T:
        try:
            result = work()
        except BaseException as error:
            end_transaction(session, error)
            raise
        end_transaction(session, None)
        return result

    with anyio.CancelScope(shield=True):
        result = await run_in_threadpool(work_and_end)
    return result


SessionDep = Annotated[Session, Depends(get_db, scope="function")]

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token",
    auto_error=False,
    scheme_name="Bearer",
    description="An access token from POST /auth/token (or the session cookie from /auth/login).",
)


class SentApiKeyHeader(APIKeyHeader):
    """The X-API-Key as sent. FastAPI reads an empty header as no header, and the request would
    then fall back to the session or bearer token; a key that is sent must be valid, even "".
    """

    def check_api_key(self, api_key: str | None) -> str | None:
        return api_key


api_key_scheme = SentApiKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from POST /api-keys, for scripts.",
)

BearerToken = Annotated[str | None, Depends(bearer_scheme)]
ApiKeyHeader = Annotated[str | None, Depends(api_key_scheme)]


def _check_csrf(request: Request, caller: Caller) -> None:
    """Cookie-authenticated unsafe requests must come from an allowed origin with the token."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    own_origin = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin not in {own_origin, *config.settings.cors_origins}:
        raise Forbidden(f"Origin {origin} is not allowed")
    assert caller.session is not None
    if not csrf_token_matches(caller.session.id, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"Missing or wrong {CSRF_HEADER} header (the token from login)")


def _refuse_api_key(request: Request) -> None:
    """Routes that take no key refuse one, rather than serving the request as if none was sent
    (anonymously, or with another credential sent alongside)."""
    if api_key_scheme.model.name in request.headers:
        raise Forbidden(
            "This route does not take an X-API-Key: use a session (POST /auth/login) or a "
            "bearer token (POST /auth/token)"
        )


def _caller_from_token(
    request: Request, response: Response, session: Session, bearer: str | None
) -> Caller | None:
    _refuse_api_key(request)
    token = bearer or request.cookies.get(session_cookie_name())
    if not token:
        return None
    authenticated = sessions.authenticate_token(session, token=token)
    caller = Caller(user=authenticated.user, session=authenticated.user_session)
    if bearer is None:
        _check_csrf(request, caller)
        if authenticated.renewed is not None:
            set_session_cookie(
                response,
                token=authenticated.renewed.token,
                expires_at=authenticated.renewed.expires_at,
            )
    return caller


def get_current_user_from_token(
    request: Request, response: Response, session: SessionDep, bearer: BearerToken
) -> Caller:
    """The user of the session cookie or bearer token."""
    caller = _caller_from_token(request, response, session, bearer)
    if caller is None:
        raise Unauthorized("Not authenticated: log in, or send a bearer token")
    return caller


def get_optional_user_from_token(
    request: Request, response: Response, session: SessionDep, bearer: BearerToken
) -> Caller | None:
    """As above, but None for an anonymous request (an invalid token is still refused)."""
    return _caller_from_token(request, response, session, bearer)


async def get_user_from_api_key(session: SessionDep, key: ApiKeyHeader) -> Caller:
    """The owner of the X-API-Key, narrowed by its scopes: from the database, or from this
    process's short memory of keys it verified (`api_keys.recently_verified`)."""
    if key is None:
        raise Unauthorized("Missing X-API-Key header")
    verified = api_keys.recently_verified(key)
    if verified is None:
        verified = await run_in_threadpool(api_keys.authenticate_api_key, session, key=key)
    user, api_key = verified
    return Caller(user=user, api_key=api_key)


async def get_caller(
    request: Request,
    response: Response,
    session: SessionDep,
    bearer: BearerToken,
    key: ApiKeyHeader,
) -> Caller:
    """Either way in: an X-API-Key when one is sent, else the session cookie or bearer token."""
    if key is not None:
        return await get_user_from_api_key(session, key)
    caller = await run_in_threadpool(_caller_from_token, request, response, session, bearer)
    if caller is None:
        raise Unauthorized("Not authenticated: log in, or send a bearer token or an X-API-Key")
    return caller


def require_scope(scope: Scope) -> Callable[[Caller], Awaitable[Caller]]:
    async def guard(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not caller.has_scope(scope):
            raise Forbidden(f"This API key lacks the {scope.value!r} scope")
        return caller

    return guard


def get_admin_user(caller: Annotated[Caller, Depends(get_current_user_from_token)]) -> Caller:
    require_admin(caller)
    return caller


async def get_configurer(
    caller: Annotated[Caller, Depends(require_scope(Scope.CONFIGURE))],
) -> Caller:
    """An admin, by session or token, or by an API key with the `configure` scope (its owner
    still an admin: a key never does more than its owner may)."""
    require_admin(caller)
    return caller


# Account management needs a session (a leaked script key must not mint keys or users).
CurrentUser = Annotated[Caller, Depends(get_current_user_from_token)]
OptionalUser = Annotated[Caller | None, Depends(get_optional_user_from_token)]
AdminUser = Annotated[Caller, Depends(get_admin_user)]
ApiKeyUser = Annotated[Caller, Depends(get_user_from_api_key)]
# Data routes accept a session or an API key with the right scope.
Reader = Annotated[Caller, Depends(require_scope(Scope.READ))]
Ingester = Annotated[Caller, Depends(require_scope(Scope.INGEST))]
# Job configuration writes: an admin, or an admin's key with the `configure` scope.
Configurer = Annotated[Caller, Depends(get_configurer)]


async def get_client_address(request: Request) -> str:
    return client_address_for(request.scope, trusted_proxy_hops=config.settings.trusted_proxy_hops)


# Where the request came from, for the login throttle.
ClientAddress = Annotated[str, Depends(get_client_address)]

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="next_cursor of the previous page")
]
