"""Demo data for development, organised as entity caches, `<MODEL>_DATA` and `seed_<model>`.

Seeding is idempotent: rows are found by their candidate key (a customer's name, a user's
email, an API key's owner and name) and only missing ones are added, so seeding twice adds
nothing the second time.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiKey, Customer, Role, Scope, User
from app.schemas.api_key import ApiKeyCreate
from app.schemas.customer import CustomerCreate
from app.services import api_keys as api_key_service
from app.services import customers as customer_service
from app.services import users as user_service
from app.services.access import Caller
from config import config

# Every seeded user's password: demo data only, never for a real deployment.
SEED_PASSWORD = "tracker-demo-password"  # noqa: S105
SEED_KEY_NAME = "Seed key"

# Entity caches: what is in the database, by candidate key, for later seeders to refer to.
customers: dict[str, Customer] = {}
users: dict[str, User] = {}

CUSTOMER_DATA: list[dict[str, str]] = [
    {"name": "St. Mary's Hospital"},
    {"name": "Northside Imaging Clinic"},
    {"name": "Lakeview Medical Center"},
]

USER_DATA: list[dict[str, str | None]] = [
    {"email": "admin@tracker.example", "first_name": "Ada", "last_name": "Admin",
     "role": "admin", "customer": None},
    {"email": "mary@stmarys.example", "first_name": "Mary", "last_name": "Okafor",
     "role": "client", "customer": "St. Mary's Hospital"},
    {"email": "tom@stmarys.example", "first_name": "Tom", "last_name": "Lindqvist",
     "role": "client", "customer": "St. Mary's Hospital"},
    {"email": "nina@northside.example", "first_name": "Nina", "last_name": "Park",
     "role": "client", "customer": "Northside Imaging Clinic"},
    {"email": "leo@lakeview.example", "first_name": "Leo", "last_name": "Haddad",
     "role": "client", "customer": "Lakeview Medical Center"},
]  # fmt: skip


def seed_customers(session: Session) -> int:
    added = 0
    for data in CUSTOMER_DATA:
        customer = session.scalar(select(Customer).where(Customer.name == data["name"]))
        if customer is None:
            customer = customer_service.create_customer(
                session, customer_in=CustomerCreate(**data)
            )
            added += 1
        customers[customer.name] = customer
    return added


def seed_users(session: Session) -> int:
    added = 0
    for data in USER_DATA:
        email = str(data["email"])
        user = user_service.get_user_by_email(session, email)
        if user is None:
            customer = customers[data["customer"]] if data["customer"] else None
            user = user_service.add_user(
                session,
                email=email,
                first_name=str(data["first_name"]),
                last_name=str(data["last_name"]),
                password=SEED_PASSWORD,
                role=Role(data["role"]),
                customer_id=customer.id if customer else None,
            )
            added += 1
        users[email] = user
    return added


def seed_api_keys(session: Session) -> dict[str, str]:
    """One key per seeded user; answers the plaintext of the keys made now (shown only once)."""
    created = {}
    for email, user in users.items():
        existing = session.scalar(
            select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.name == SEED_KEY_NAME)
        )
        if existing is None:
            _, plaintext = api_key_service.create_api_key(
                session,
                caller=Caller(user=user),
                key_in=ApiKeyCreate(name=SEED_KEY_NAME, scopes=[Scope.INGEST, Scope.READ]),
            )
            created[email] = plaintext
    return created


def seed_db(*, if_empty: bool = False) -> dict[str, int]:
    """Add whatever demo data is missing and commit; answer how many rows of each were added.

    With `if_empty`, leave a database that already has customers alone.
    """
    with config.database.SessionLocal() as session:
        if if_empty and session.scalar(select(Customer.id).limit(1)) is not None:
            print("Seed skipped: the database already has data")
            return {}
        added = {"customers": seed_customers(session), "users": seed_users(session)}
        new_keys = seed_api_keys(session)
        added["api keys"] = len(new_keys)
        session.commit()
    print("Seeded: " + ", ".join(f"{count} {name}" for name, count in added.items()))
    if any(count for count in added.values()):
        print(f"Seeded users log in with the password {SEED_PASSWORD!r}")
    for email, plaintext in new_keys.items():
        print(f"API key for {email} (shown once): {plaintext}")
    return added
