from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from app.internal.pagination import keyset_page
from app.internal.security import hash_password, verify_password
from app.models import Customer, Role, User, UserSession
from app.schemas.customer import CustomerCreate
from app.schemas.user import UserCreate, UserUpdate, UserUpdateMe
from app.services import api_keys, sessions
from app.services.access import Caller, require_admin
from app.services.customers import create_customer
from config import config


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.lower()))


def _ensure_email_free(session: Session, email: str) -> None:
    if get_user_by_email(session, email) is not None:
        raise Conflict(f"A user with email {email} already exists")


def _existing_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise InvalidInput(f"Customer {customer_id} does not exist")
    return customer


def create_user(session: Session, *, caller: Caller | None, user_in: UserCreate) -> User:
    """Sign-up (no caller: a client of a new customer) or creation by an admin (any role)."""
    customer_id: int | None
    if caller is None:
        role, customer_id = _signup(session, user_in)
    else:
        require_admin(caller)
        role, customer_id = _admin_choice(session, user_in)
    return add_user(
        session,
        email=user_in.email,
        first_name=user_in.first_name,
        last_name=user_in.last_name,
        password=user_in.password,
        role=role,
        customer_id=customer_id,
    )


def add_user(
    session: Session,
    *,
    email: str,
    first_name: str,
    last_name: str,
    password: str,
    role: Role,
    customer_id: int | None,
) -> User:
    """Store a user whose role and customer are already decided (also for seeds and tasks)."""
    _ensure_email_free(session, email)
    user = User(
        email=email.lower(),
        first_name=first_name,
        last_name=last_name,
        password_hash=hash_password(password),
        role=role,
        customer_id=customer_id,
    )
    session.add(user)
    session.flush()
    return user


def _signup(session: Session, user_in: UserCreate) -> tuple[Role, int]:
    if not config.settings.signup_enabled:
        raise Forbidden("Sign-up is disabled: ask an admin for an account")
    if user_in.role is not None or user_in.customer_id is not None:
        raise Forbidden("Only admins may set role or customer_id")
    if user_in.customer_name is None:
        raise InvalidInput("customer_name is required to sign up")
    _ensure_email_free(session, user_in.email)
    customer = create_customer(session, customer_in=CustomerCreate(name=user_in.customer_name))
    return Role.CLIENT, customer.id


def _admin_choice(session: Session, user_in: UserCreate) -> tuple[Role, int | None]:
    if user_in.customer_name is not None:
        raise InvalidInput("customer_name is for sign-up; admins pass customer_id")
    role = user_in.role or (Role.CLIENT if user_in.customer_id is not None else None)
    if role is None:
        raise InvalidInput("role is required (admin, or client with a customer_id)")
    return role, _customer_for_role(session, role, user_in.customer_id)


def _customer_for_role(session: Session, role: Role, customer_id: int | None) -> int | None:
    if role == Role.ADMIN:
        if customer_id is not None:
            raise InvalidInput("An admin belongs to no customer: omit customer_id")
        return None
    if customer_id is None:
        raise InvalidInput("A client user needs a customer_id")
    return _existing_customer(session, customer_id).id


def get_user(session: Session, *, caller: Caller, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not (caller.is_admin or user.id == caller.user.id):
        raise NotFound(f"User {user_id} not found")
    return user


def list_users(
    session: Session,
    *,
    caller: Caller,
    customer_id: int | None,
    role: Role | None,
    q: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[User], str | None]:
    require_admin(caller)
    statement = select(User)
    if customer_id is not None:
        statement = statement.where(User.customer_id == customer_id)
    if role is not None:
        statement = statement.where(User.role == role)
    if q:
        statement = statement.where(
            or_(
                User.email.icontains(q, autoescape=True),
                User.first_name.icontains(q, autoescape=True),
                User.last_name.icontains(q, autoescape=True),
            )
        )
    return keyset_page(session, statement, order_by=[User.id], limit=limit, cursor=cursor)


def update_me(session: Session, *, caller: Caller, user_in: UserUpdateMe) -> User:
    user = caller.user
    if user_in.first_name is not None:
        user.first_name = user_in.first_name
    if user_in.last_name is not None:
        user.last_name = user_in.last_name
    if user_in.new_password is not None:
        if not verify_password(user_in.current_password or "", user.password_hash):
            raise Unauthorized("current_password is wrong")
        set_password(session, user=user, password=user_in.new_password, keep=caller.session)
    session.flush()
    return user


def set_password(
    session: Session, *, user: User, password: str, keep: UserSession | None = None
) -> None:
    """Change a password and end every session of the user but `keep` (the caller's own)."""
    user.password_hash = hash_password(password)
    user.password_changed_at = datetime.now(UTC)
    sessions.revoke_all(session, user_id=user.id, except_session=keep)


def update_user(session: Session, *, caller: Caller, user_id: int, user_in: UserUpdate) -> User:
    require_admin(caller)
    user = get_user(session, caller=caller, user_id=user_id)
    changes = user_in.model_dump(exclude_unset=True)
    if user.id == caller.user.id and (
        changes.get("is_active") is False or changes.get("role") not in (None, Role.ADMIN)
    ):
        raise Conflict("Admins cannot deactivate or demote themselves")
    if "role" in changes or "customer_id" in changes:
        role = changes.get("role") or user.role
        customer_id = changes.get("customer_id", user.customer_id if role == Role.CLIENT else None)
        user.customer_id = _customer_for_role(session, role, customer_id)
        user.role = role
    for name in ("first_name", "last_name"):
        if changes.get(name) is not None:
            setattr(user, name, changes[name])
    if changes.get("is_active") is not None:
        user.is_active = changes["is_active"]
        if not user.is_active:
            sessions.revoke_all(session, user_id=user.id)
    session.flush()
    api_keys.forget_verified_keys()  # the role, customer or active flag its keys act with
    return user
