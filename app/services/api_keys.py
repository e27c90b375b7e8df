import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, joinedload

from app.internal import api_key_format
from app.internal.errors import InvalidInput, NotFound, Unauthorized
from app.internal.pagination import keyset_page
from app.models import ApiKey, Customer, Scope, User
from app.schemas.api_key import ApiKeyCreate
from app.services.access import Caller
from config import config

Row = TypeVar("Row", ApiKey, User, Customer)

INVALID_KEY = "Invalid API key"


def create_api_key(session: Session, *, caller: Caller, key_in: ApiKeyCreate) -> tuple[ApiKey, str]:
    """A new key for the caller; answers the key and its plaintext (never stored)."""
    if key_in.expires_at is not None and key_in.expires_at <= datetime.now(UTC):
        raise InvalidInput("expires_at must be in the future")
    if Scope.CONFIGURE in key_in.scopes and not caller.is_admin:
        raise InvalidInput("the 'configure' scope is for administrators' keys only")
    plaintext = api_key_format.generate_api_key()
    api_key = ApiKey(
        user_id=caller.user.id,
        name=key_in.name,
        prefix=api_key_format.display_prefix(plaintext),
        digest=api_key_format.digest(plaintext),
        scopes=list(key_in.scopes),
        expires_at=key_in.expires_at,
    )
    session.add(api_key)
    session.flush()
    return api_key, plaintext


def get_api_key(session: Session, *, caller: Caller, api_key_id: int) -> ApiKey:
    api_key = session.get(ApiKey, api_key_id)
    if api_key is None or not (caller.is_admin or api_key.user_id == caller.user.id):
        raise NotFound(f"API key {api_key_id} not found")
    return api_key


def list_api_keys(
    session: Session, *, caller: Caller, user_id: int | None, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """The caller's own keys; an admin may ask for another user's."""
    owner_id = user_id if caller.is_admin and user_id is not None else caller.user.id
    if user_id is not None and user_id != owner_id:
        raise NotFound(f"User {user_id} not found")
    statement = select(ApiKey).where(ApiKey.user_id == owner_id)
    return keyset_page(session, statement, order_by=[ApiKey.id], limit=limit, cursor=cursor)


def revoke_api_key(session: Session, *, caller: Caller, api_key_id: int) -> None:
    api_key = get_api_key(session, caller=caller, api_key_id=api_key_id)
    if api_key.revoked_at is None:
        api_key.revoked_at = datetime.now(UTC)
        session.flush()
        forget_verified_keys()


def authenticate_api_key(session: Session, *, key: str) -> tuple[User, ApiKey]:
    """The owner of a live key. Malformed keys are refused before any query."""
    if not api_key_format.is_well_formed(key):
        raise Unauthorized(INVALID_KEY)
    api_key = session.scalar(
        select(ApiKey)
        .options(joinedload(ApiKey.user).joinedload(User.customer))
        .where(ApiKey.digest == api_key_format.digest(key))
    )
    now = datetime.now(UTC)
    if api_key is None or api_key.revoked_at is not None:
        raise Unauthorized(INVALID_KEY)
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise Unauthorized("API key expired")
    if not api_key.user.may_authenticate:
        raise Unauthorized(INVALID_KEY)
    interval = timedelta(seconds=config.settings.activity_write_interval_seconds)
    if api_key.last_used_at is None or api_key.last_used_at <= now - interval:
        api_key.last_used_at = now
    _remember(api_key)
    return api_key.user, api_key


# Keys verified by this process, by digest, so that most requests need no query to authenticate
# (on the event hot path that query was a third of the database round trips). An entry is
# trusted for API_KEY_CACHE_SECONDS (at most 30) and never past the key's expiry: a key revoked,
# or an owner or customer deactivated, in another process (another Lambda instance) is refused
# within that bound; in this process at once, as these changes forget every entry.
@dataclass(frozen=True)
class _Verified:
    user: User
    api_key: ApiKey
    trusted_until: float  # time.monotonic()


_verified: dict[str, _Verified] = {}
_VERIFIED_LIMIT = 10_000


def recently_verified(key: str) -> tuple[User, ApiKey] | None:
    """The owner and key of a key this process verified within the bound, if still unexpired.
    The objects are detached from any session: read them, never add them to one."""
    entry = _verified.get(api_key_format.digest(key)) if _verified else None
    if entry is None or entry.trusted_until <= time.monotonic():
        return None
    expires_at = entry.api_key.expires_at
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return None
    return entry.user, entry.api_key


def _remember(api_key: ApiKey) -> None:
    seconds = config.settings.api_key_cache_seconds
    if not seconds:
        return
    if len(_verified) >= _VERIFIED_LIMIT:
        _verified.clear()
    # Copies, never the request's own objects: a rollback (any refused request) expires those,
    # and reading them afterwards, detached, would fail the next request that finds them here.
    user = _copy(api_key.user)
    if api_key.user.customer is not None:
        user.customer = _copy(api_key.user.customer)
    key_copy = _copy(api_key)
    key_copy.user = user
    _verified[api_key.digest] = _Verified(user, key_copy, time.monotonic() + seconds)


def _copy(row: Row) -> Row:
    """A transient copy of `row`'s columns, belonging to no session."""
    columns = inspect(row).mapper.column_attrs
    return type(row)(**{column.key: getattr(row, column.key) for column in columns})


def forget_verified_keys() -> None:
    """After a change that may refuse a key (revocation, a user's or customer's change)."""
    _verified.clear()
