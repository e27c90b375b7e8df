"""The customers service: names are unique, a client sees its own customer only (another one
answers as a missing one does), and only admins change customers."""

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, Forbidden, NotFound
from app.schemas.customer import CustomerCreate, CustomerUpdate
from app.services import customers
from app.services.access import Caller
from tests.helpers.factories import create_admin, create_customer, create_user, unique


def test_a_name_is_taken_once_and_renaming_to_its_own_name_is_allowed(db: Session) -> None:
    name = unique("Hospital")
    customer = customers.create_customer(db, customer_in=CustomerCreate(name=name))
    with pytest.raises(Conflict, match="already exists"):
        customers.create_customer(db, customer_in=CustomerCreate(name=name))
    admin = Caller(create_admin(db))
    same = customers.update_customer(
        db, caller=admin, customer_id=customer.id, customer_in=CustomerUpdate(name=name)
    )
    assert same.name == name
    other = create_customer(db)
    with pytest.raises(Conflict):
        customers.update_customer(
            db, caller=admin, customer_id=other.id, customer_in=CustomerUpdate(name=name)
        )


def test_a_client_sees_its_own_customer_only_and_changes_none(db: Session) -> None:
    own, other = create_customer(db), create_customer(db)
    client = Caller(create_user(db, customer=own))
    assert customers.get_customer(db, caller=client, customer_id=own.id) == own
    with pytest.raises(NotFound, match=f"Customer {other.id} not found"):
        customers.get_customer(db, caller=client, customer_id=other.id)
    listed, _ = customers.list_customers(db, caller=client, q=None, limit=50, cursor=None)
    assert listed == [own]
    with pytest.raises(Forbidden):
        customers.update_customer(
            db, caller=client, customer_id=own.id, customer_in=CustomerUpdate(is_active=False)
        )
