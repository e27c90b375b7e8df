"""The users service: sign-up makes a client of a new customer and may set nothing else; an
admin chooses role and customer, consistently; a user sees only itself unless an admin; admins
cannot lock themselves out, and deactivating a user ends its sessions."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.models import Customer, Role, UserSession
from app.schemas.user import UserCreate, UserUpdate
from app.services import users
from app.services.access import Caller
from tests.helpers.factories import PASSWORD, create_admin, create_customer, create_user, unique


def user_in(**fields: Any) -> UserCreate:
    return UserCreate(
        email=f"{unique('new')}@Example.com",
        first_name="Ada",
        last_name="Lovelace",
        password=PASSWORD,
        **fields,
    )


def test_sign_up_makes_a_client_of_a_new_customer_and_nothing_else(db: Session) -> None:
    name = unique("Hospital")
    signing_up = user_in(customer_name=name)
    user = users.create_user(db, caller=None, user_in=signing_up)
    customer = db.scalar(select(Customer).where(Customer.name == name))
    assert customer is not None
    assert (user.role, user.customer_id) == (Role.CLIENT, customer.id)
    assert user.email == signing_up.email
    with pytest.raises(Forbidden, match="Only admins may set role or customer_id"):
        users.create_user(db, caller=None, user_in=user_in(customer_name=name, role=Role.ADMIN))
    with pytest.raises(InvalidInput, match="customer_name is required"):
        users.create_user(db, caller=None, user_in=user_in())
    with pytest.raises(Conflict):
        users.create_user(
            db,
            caller=None,
            user_in=user_in(customer_name=unique("Other")).model_copy(update={"email": user.email}),
        )


def test_an_admin_chooses_role_and_customer_consistently(db: Session) -> None:
    admin, customer = Caller(create_admin(db)), create_customer(db)
    client = users.create_user(db, caller=admin, user_in=user_in(customer_id=customer.id))
    assert (client.role, client.customer_id) == (Role.CLIENT, customer.id)
    other_admin = users.create_user(db, caller=admin, user_in=user_in(role=Role.ADMIN))
    assert other_admin.customer_id is None
    for wrong, message in (
        (user_in(), "role is required"),
        (user_in(role=Role.ADMIN, customer_id=customer.id), "An admin belongs to no customer"),
        (user_in(role=Role.CLIENT), "A client user needs a customer_id"),
        (user_in(customer_name="x"), "customer_name is for sign-up"),
    ):
        with pytest.raises(InvalidInput, match=message):
            users.create_user(db, caller=admin, user_in=wrong)
    with pytest.raises(Forbidden):
        users.create_user(db, caller=Caller(client), user_in=user_in(customer_id=customer.id))


def test_a_user_sees_itself_only_unless_an_admin(db: Session) -> None:
    me, someone = create_user(db), create_user(db)
    assert users.get_user(db, caller=Caller(me), user_id=me.id) == me
    with pytest.raises(NotFound, match=f"User {someone.id} not found"):
        users.get_user(db, caller=Caller(me), user_id=someone.id)
    assert users.get_user(db, caller=Caller(create_admin(db)), user_id=someone.id) == someone


def test_admins_cannot_lock_themselves_out_and_deactivation_ends_sessions(db: Session) -> None:
    admin_user = create_admin(db)
    admin = Caller(admin_user)
    for change in (UserUpdate(is_active=False), UserUpdate(role=Role.CLIENT)):
        with pytest.raises(Conflict, match="cannot deactivate or demote themselves"):
            users.update_user(db, caller=admin, user_id=admin_user.id, user_in=change)

    client = create_user(db)
    live = UserSession(user_id=client.id, expires_at=datetime.now(UTC) + timedelta(hours=1))
    db.add(live)
    db.flush()
    users.update_user(db, caller=admin, user_id=client.id, user_in=UserUpdate(is_active=False))
    db.refresh(live)
    assert live.revoked_at is not None
    promoted = users.update_user(
        db, caller=admin, user_id=client.id, user_in=UserUpdate(role=Role.ADMIN)
    )
    assert (promoted.role, promoted.customer_id) == (Role.ADMIN, None)
