"""Demo data for development, organised as entity caches, `<MODEL>_DATA` and `seed_<model>`.

Seeding is idempotent: rows are found by their candidate key (a customer's name, a user's
email, ...) and only missing ones are added, so seeding twice adds nothing the second time.
"""

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Customer
from config import config

logger = logging.getLogger("tracker.seed")

# Entity caches: what is in the database, by candidate key, for later seeders to refer to.
customers: dict[str, Customer] = {}

CUSTOMER_DATA: list[dict[str, str]] = [
    {"name": "St. Mary's Hospital"},
    {"name": "Northside Imaging Clinic"},
    {"name": "Lakeview Medical Center"},
]


def seed_customers(session: Session) -> int:
    added = 0
    for data in CUSTOMER_DATA:
        customer = session.scalar(select(Customer).where(Customer.name == data["name"]))
        if customer is None:
            customer = Customer(**data)
            session.add(customer)
            added += 1
        customers[customer.name] = customer
    session.flush()
    return added


def seed_db(*, if_empty: bool = False) -> dict[str, int]:
    """Add whatever demo data is missing and commit; answer how many rows of each were added.

    With `if_empty`, leave a database that already has customers alone.
    """
    with config.database.SessionLocal() as session:
        if if_empty and session.scalar(select(Customer.id).limit(1)) is not None:
            print("Seed skipped: the database already has data")
            return {}
        added = {"customers": seed_customers(session)}
        session.commit()
    print("Seeded: " + ", ".join(f"{count} {name}" for name, count in added.items()))
    return added
