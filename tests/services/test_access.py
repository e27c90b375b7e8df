"""Who may see what: the customer a report is narrowed to."""

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import NotFound
from app.services.access import Caller, report_customer
from tests.helpers.factories import create_admin, create_customer, create_user


def test_an_admin_naming_no_customer_reports_on_every_customer(db: Session) -> None:
    assert report_customer(db, caller=Caller(create_admin(db)), customer_id=None) is None


def test_an_admin_naming_a_customer_reports_on_it(db: Session) -> None:
    customer = create_customer(db)
    caller = Caller(create_admin(db))
    assert report_customer(db, caller=caller, customer_id=customer.id) == customer.id


def test_a_client_reports_on_its_own_customer_named_or_not(db: Session) -> None:
    client = create_user(db)
    caller = Caller(client)
    assert report_customer(db, caller=caller, customer_id=None) == client.customer_id
    assert report_customer(db, caller=caller, customer_id=client.customer_id) == client.customer_id


def test_another_customer_is_not_found_exactly_as_a_missing_one(db: Session) -> None:
    other = create_customer(db)
    client = Caller(create_user(db))
    with pytest.raises(NotFound) as hidden:
        report_customer(db, caller=client, customer_id=other.id)
    assert hidden.value.detail == f"Customer {other.id} not found"
    with pytest.raises(NotFound) as missing:
        report_customer(db, caller=Caller(create_admin(db)), customer_id=999_999_999)
    assert missing.value.detail == "Customer 999999999 not found"
