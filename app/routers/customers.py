from fastapi import APIRouter, Query, status

from app.dependencies import AdminUser, Cursor, Limit, Reader, SessionDep
from app.internal.pagination import DEFAULT_LIMIT
from app.schemas.customer import CustomerCreate, CustomerPublic, CustomerUpdate
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL
from app.schemas.page import Page
from app.services import customers

router = APIRouter(prefix="/customers", tags=["customers"], responses=error_responses(401, 403))


@router.post(
    "",
    response_model=CustomerPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 409),
)
def create_customer(
    session: SessionDep, caller: AdminUser, customer_in: CustomerCreate
) -> CustomerPublic:
    """Create a customer (admin)."""
    customer = customers.create_customer(session, customer_in=customer_in)
    return CustomerPublic.model_validate(customer)


@router.get("", response_model=Page[CustomerPublic], responses=error_responses(422))
def read_customers(
    session: SessionDep,
    caller: Reader,
    q: str | None = Query(
        default=None, max_length=200, pattern=NO_NUL, description="Part of the name"
    ),
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CustomerPublic]:
    """List customers: every one for an admin, a client's own for a client."""
    items, next_cursor = customers.list_customers(
        session, caller=caller, q=q, limit=limit, cursor=cursor
    )
    return Page(
        items=[CustomerPublic.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("/{customer_id}", response_model=CustomerPublic, responses=error_responses(404))
def read_customer(session: SessionDep, caller: Reader, customer_id: int) -> CustomerPublic:
    """One customer."""
    customer = customers.get_customer(session, caller=caller, customer_id=customer_id)
    return CustomerPublic.model_validate(customer)


@router.patch(
    "/{customer_id}", response_model=CustomerPublic, responses=error_responses(400, 404, 409)
)
def update_customer(
    session: SessionDep, caller: AdminUser, customer_id: int, customer_in: CustomerUpdate
) -> CustomerPublic:
    """Rename or (de)activate a customer (admin). A deactivated customer's users cannot log in."""
    customer = customers.update_customer(
        session, caller=caller, customer_id=customer_id, customer_in=customer_in
    )
    return CustomerPublic.model_validate(customer)
