from fastapi import APIRouter, status

from app.dependencies import CurrentUser, Cursor, Limit, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from app.schemas.error import error_responses
from app.schemas.page import Page
from app.services import api_keys

router = APIRouter(prefix="/api-keys", tags=["api keys"])


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 422),
)
def create_api_key(session: SessionDep, caller: CurrentUser, key_in: ApiKeyCreate) -> ApiKeyCreated:
    """Create an API key for yourself. The answer holds the whole key: it is shown only once."""
    api_key, plaintext = api_keys.create_api_key(session, caller=caller, key_in=key_in)
    return ApiKeyCreated(**ApiKeyPublic.model_validate(api_key).model_dump(), key=plaintext)


@router.get("", response_model=Page[ApiKeyPublic], responses=error_responses(401, 403, 404, 422))
def read_api_keys(
    session: SessionDep,
    caller: CurrentUser,
    user_id: int | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ApiKeyPublic]:
    """Your API keys; an admin may pass `user_id` for another user's."""
    items, next_cursor = api_keys.list_api_keys(
        session, caller=caller, user_id=user_id, limit=limit, cursor=cursor
    )
    return Page(
        items=[ApiKeyPublic.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("/{api_key_id}", response_model=ApiKeyPublic, responses=error_responses(401, 403, 404))
def read_api_key(session: SessionDep, caller: CurrentUser, api_key_id: int) -> ApiKeyPublic:
    """One of your API keys (an admin: anyone's)."""
    api_key = api_keys.get_api_key(session, caller=caller, api_key_id=api_key_id)
    return ApiKeyPublic.model_validate(api_key)


@router.delete(
    "/{api_key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
def delete_api_key(session: SessionDep, caller: CurrentUser, api_key_id: int) -> None:
    """Revoke an API key; it stops working at once."""
    api_keys.revoke_api_key(session, caller=caller, api_key_id=api_key_id)
