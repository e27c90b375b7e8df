from sqlalchemy import select
from sqlalchemy.orm import Session

from app.internal.errors import Conflict, NotFound
from app.internal.pagination import keyset_page
from app.models import Customer
from app.schemas.customer import CustomerCreate, CustomerUpdate
from app.services import api_keys
from app.services.access import Caller, require_admin


def _ensure_name_free(session: Session, name: str, *, except_id: int | None = None) -> None:
    statement = select(Customer.id).where(Customer.name == name)
    if except_id is not None:
        statement = statement.where(Customer.id != except_id)
    if session.scalar(statement) is not None:
        raise Conflict(f"A customer named {name!r} already exists")


def create_customer(session: Session, *, customer_in: CustomerCreate) -> Customer:
    _ensure_name_free(session, customer_in.name)
    customer = Customer(name=customer_in.name)
    session.add(customer)
    session.flush()
    return customer


def get_customer(session: Session, *, caller: Caller, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or not caller.can_see_customer(customer.id):
        raise NotFound(f"Customer {customer_id} not found")
    return customer


def list_customers(
    session: Session, *, caller: Caller, q: str | None, limit: int, cursor: str | None
) -> tuple[list[Customer], str | None]:
    statement = select(Customer).where(caller.customer_filter(Customer.id))
    if q:
        statement = statement.where(Customer.name.icontains(q, autoescape=True))
    return keyset_page(session, statement, order_by=[Customer.id], limit=limit, cursor=cursor)


def update_customer(
    session: Session, *, caller: Caller, customer_id: int, customer_in: CustomerUpdate
) -> Customer:
    require_admin(caller)
    customer = get_customer(session, caller=caller, customer_id=customer_id)
    if customer_in.name is not None:
        _ensure_name_free(session, customer_in.name, except_id=customer.id)
        customer.name = customer_in.name
    if customer_in.is_active is not None:
        customer.is_active = customer_in.is_active
        api_keys.forget_verified_keys()  # its users' keys
    session.flush()
    return customer
