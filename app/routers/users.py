from fastapi import APIRouter, Query, status

from app.dependencies import (
    AdminUser,
    CurrentUser,
    Cursor,
    Limit,
    OptionalUser,
    Reader,
    SessionDep,
)
from app.internal.pagination import DEFAULT_LIMIT
from app.models import Role
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL
from app.schemas.page import Page
from app.schemas.user import UserCreate, UserPublic, UserUpdate, UserUpdateMe
from app.services import users

router = APIRouter(prefix="/users", tags=["users"])


@router.post(
    "",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 409, 422),
    # Anonymous sign-up is allowed: authentication is optional here.
    openapi_extra={"security": [{}]},
)
def create_user(session: SessionDep, caller: OptionalUser, user_in: UserCreate) -> UserPublic:
    """Sign up (anonymous: a client user and a new customer) or create a user (admin)."""
    user = users.create_user(session, caller=caller, user_in=user_in)
    return UserPublic.model_validate(user)


@router.get("/me", response_model=UserPublic, responses=error_responses(401, 403))
def read_user_me(caller: Reader) -> UserPublic:
    """The caller: the logged-in user, or the owner of the API key."""
    return UserPublic.model_validate(caller.user)


@router.patch("/me", response_model=UserPublic, responses=error_responses(400, 401, 403))
def update_user_me(session: SessionDep, caller: CurrentUser, user_in: UserUpdateMe) -> UserPublic:
    """Change your names, or your password (needs the current one; ends your other sessions)."""
    user = users.update_me(session, caller=caller, user_in=user_in)
    return UserPublic.model_validate(user)


@router.get("", response_model=Page[UserPublic], responses=error_responses(401, 403, 422))
def read_users(
    session: SessionDep,
    caller: AdminUser,
    customer_id: int | None = None,
    role: Role | None = None,
    q: str | None = Query(
        default=None, max_length=200, pattern=NO_NUL, description="Part of email or name"
    ),
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[UserPublic]:
    """List users (admin)."""
    items, next_cursor = users.list_users(
        session,
        caller=caller,
        customer_id=customer_id,
        role=role,
        q=q,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[UserPublic.model_validate(item) for item in items], next_cursor=next_cursor)


@router.get("/{user_id}", response_model=UserPublic, responses=error_responses(401, 403, 404))
def read_user(session: SessionDep, caller: CurrentUser, user_id: int) -> UserPublic:
    """One user (admin, or yourself)."""
    return UserPublic.model_validate(users.get_user(session, caller=caller, user_id=user_id))


@router.patch(
    "/{user_id}", response_model=UserPublic, responses=error_responses(400, 401, 403, 404, 409, 422)
)
def update_user(
    session: SessionDep, caller: AdminUser, user_id: int, user_in: UserUpdate
) -> UserPublic:
    """Change a user's role, customer, names or active flag (admin). Deactivating ends the
    user's sessions and stops the user's API keys."""
    user = users.update_user(session, caller=caller, user_id=user_id, user_in=user_in)
    return UserPublic.model_validate(user)
