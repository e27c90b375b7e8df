"""Customers: admins manage them; a client sees its own only, and others look missing."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Customer, Scope
from tests.helpers.factories import (
    PASSWORD,
    bearer_token,
    create_admin,
    create_api_key,
    create_customer,
    create_user,
    log_in,
    unique,
)

MISSING_ID = 987_654_321


def _customer_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Customer)) or 0


def _listed_ids(
    client: TestClient, headers: dict[str, str] | None = None, **params: str | int
) -> set[int]:
    response = client.get("/customers", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_an_admin_creates_a_customer(client: TestClient, db: Session) -> None:
    login = log_in(client, create_admin(db))
    name = unique("Hospital")
    response = client.post("/customers", json={"name": f"  {name} "}, headers=login.headers)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "is_active", "created_at", "updated_at"}
    assert (body["name"], body["is_active"]) == (name, True)
    stored = db.get(Customer, body["id"])
    assert stored is not None
    assert stored.name == name


def test_a_customer_name_is_unique(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    existing = create_customer(db)
    response = client.post("/customers", json={"name": existing.name}, headers=admin)
    assert response.status_code == 409
    assert existing.name in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({}, "name"),
        ({"name": "Fine", "is_active": False}, "is_active"),
        ({"name": "Fine", "id": 1}, "id"),
    ],
)
def test_a_malformed_customer_is_422_naming_the_field(
    client: TestClient, db: Session, payload: dict[str, object], field: str
) -> None:
    admin = bearer_token(client, create_admin(db))
    response = client.post("/customers", json=payload, headers=admin)
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_a_client_may_not_create_or_change_customers(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    other = create_customer(db)
    before = _customer_count(db)
    response = client.post("/customers", json={"name": unique("Mine")}, headers=login.headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "Only admins may do this"}
    assert _customer_count(db) == before
    for customer_id in (user.customer_id, other.id, MISSING_ID):
        response = client.patch(
            f"/customers/{customer_id}", json={"name": unique("Renamed")}, headers=login.headers
        )
        assert response.status_code == 403
    db.refresh(other)
    assert other.name.startswith("Customer-")


def test_an_api_key_may_not_create_customers(client: TestClient, db: Session) -> None:
    key = create_api_key(db, create_admin(db))
    response = client.post("/customers", json={"name": unique("Org")}, headers={"X-API-Key": key})
    assert response.status_code == 403


def test_an_admin_lists_every_customer(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    created = {create_customer(db).id for _ in range(3)}
    assert created <= _listed_ids(client, admin)


def test_a_client_lists_only_its_own_customer(client: TestClient, db: Session) -> None:
    user = create_user(db)
    create_customer(db)
    log_in(client, user)
    assert _listed_ids(client) == {user.customer_id}
    assert _listed_ids(client, q="no such name") == set()


def test_customers_filter_by_name(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    wanted = create_customer(db, name=unique("Royal Infirmary"))
    create_customer(db, name=unique("Clinic"))
    assert _listed_ids(client, admin, q="royal infirm") == {wanted.id}
    assert _listed_ids(client, admin, q="_") == set()  # matched literally, not as a wildcard


def test_customer_pages_walk_every_row_once(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    created = {create_customer(db).id for _ in range(3)}
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/customers", params=params, headers=admin).json()
        assert len(page["items"]) == 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == _customer_count(db)
    assert created <= set(seen)
    response = client.get("/customers", params={"cursor": "garbage!"}, headers=admin)
    assert response.status_code == 422


def test_read_keys_see_their_owners_customers_and_ingest_keys_none(
    client: TestClient, db: Session
) -> None:
    user = create_user(db)
    create_customer(db)
    read_key = {"X-API-Key": create_api_key(db, user, scopes=(Scope.READ,))}
    ingest_key = {"X-API-Key": create_api_key(db, user, scopes=(Scope.INGEST,))}
    assert _listed_ids(client, read_key) == {user.customer_id}
    assert client.get(f"/customers/{user.customer_id}", headers=read_key).status_code == 200
    for path in ("/customers", f"/customers/{user.customer_id}"):
        response = client.get(path, headers=ingest_key)
        assert response.status_code == 403
        assert response.json() == {"detail": "This API key lacks the 'read' scope"}


def test_a_client_reads_its_customer_and_no_other(client: TestClient, db: Session) -> None:
    user = create_user(db)
    other = create_customer(db)
    log_in(client, user)
    own = client.get(f"/customers/{user.customer_id}")
    assert own.status_code == 200
    assert own.json()["id"] == user.customer_id
    missing = client.get(f"/customers/{MISSING_ID}")
    hidden = client.get(f"/customers/{other.id}")
    assert hidden.status_code == missing.status_code == 404
    assert missing.json() == {"detail": f"Customer {MISSING_ID} not found"}
    assert hidden.json() == {"detail": f"Customer {other.id} not found"}
    key = {"X-API-Key": create_api_key(db, user)}
    by_key = client.get(f"/customers/{other.id}", headers=key)
    assert (by_key.status_code, by_key.json()) == (404, hidden.json())


def test_an_admin_reads_any_customer(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    customer = create_customer(db)
    response = client.get(f"/customers/{customer.id}", headers=admin)
    assert response.json()["name"] == customer.name
    assert client.get(f"/customers/{MISSING_ID}", headers=admin).status_code == 404


def test_an_admin_renames_a_customer(client: TestClient, db: Session) -> None:
    login = log_in(client, create_admin(db))
    customer, other = create_customer(db), create_customer(db)
    new_name = unique("Renamed")
    response = client.patch(
        f"/customers/{customer.id}", json={"name": new_name}, headers=login.headers
    )
    assert response.status_code == 200
    assert response.json()["name"] == new_name
    # Its own name again is fine; another customer's is not.
    same = client.patch(f"/customers/{customer.id}", json={"name": new_name}, headers=login.headers)
    assert same.status_code == 200
    taken = client.patch(
        f"/customers/{customer.id}", json={"name": other.name}, headers=login.headers
    )
    assert taken.status_code == 409
    db.refresh(customer)
    assert customer.name == new_name
    missing = client.patch(f"/customers/{MISSING_ID}", json={"name": "X"}, headers=login.headers)
    assert missing.status_code == 404
    unknown = client.patch(f"/customers/{customer.id}", json={"id": 1}, headers=login.headers)
    assert unknown.status_code == 422


def _login_status(client: TestClient, email: str) -> int:
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    return response.status_code


def test_deactivating_a_customer_locks_its_users_out(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    user = create_user(db)
    customer_id = user.customer_id
    bystander = create_user(db)
    session = bearer_token(client, user)
    key = {"X-API-Key": create_api_key(db, user)}

    response = client.patch(f"/customers/{customer_id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert response.json()["is_active"] is False

    refused = client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Incorrect email or password"}
    assert client.get("/users/me", headers=session).status_code == 401
    assert client.get("/users/me", headers=key).status_code == 401
    assert _login_status(client, bystander.email) == 200

    client.patch(f"/customers/{customer_id}", json={"is_active": True}, headers=admin)
    assert _login_status(client, user.email) == 200
    assert client.get("/users/me", headers=key).status_code == 200
