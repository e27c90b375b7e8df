"""Routes that manage accounts take a session or a bearer token, never an API key, whatever its
scopes: a key sent to one is refused with 403, not ignored (which would serve the request
anonymously). Job configuration writes take an admin's key with the `configure` scope
(tests/routers/test_job_configurations.py)."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Customer, Scope, User
from tests.helpers.factories import bearer_token, create_admin, create_api_key, unique

# Every route that takes no key, with a body that would otherwise be valid where one is needed.
TOKEN_ONLY_ROUTES: list[tuple[str, str, object]] = [
    (
        "POST",
        "/users",
        {
            "email": "new@example.com",
            "first_name": "A",
            "last_name": "B",
            "password": "long enough password",
            "customer_name": "New",
        },
    ),
    ("GET", "/users", None),
    ("GET", "/users/1", None),
    ("PATCH", "/users/me", {"first_name": "Changed"}),
    ("PATCH", "/users/1", {"first_name": "Changed"}),
    ("POST", "/api-keys", {"name": "k", "scopes": ["read"]}),
    ("GET", "/api-keys", None),
    ("GET", "/api-keys/1", None),
    ("DELETE", "/api-keys/1", None),
    ("POST", "/customers", {"name": "Acme"}),
    ("PATCH", "/customers/1", {"name": "Acme"}),
    ("POST", "/auth/logout", None),
    ("POST", "/auth/logout-all", None),
]


@pytest.mark.parametrize(("method", "path", "body"), TOKEN_ONLY_ROUTES)
def test_an_admin_key_is_refused_with_403(
    db: Session, client: TestClient, method: str, path: str, body: object
) -> None:
    key = create_api_key(db, create_admin(db), scopes=tuple(Scope))
    response = client.request(method, path, json=body, headers={"X-API-Key": key})
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert "X-API-Key" in detail
    assert "session" in detail
    assert "bearer token" in detail


def test_sign_up_with_an_admin_key_creates_nothing(db: Session, client: TestClient) -> None:
    key = create_api_key(db, create_admin(db))
    email = f"{unique('signup')}@example.com"
    users_before = db.scalar(select(func.count()).select_from(User))
    customers_before = db.scalar(select(func.count()).select_from(Customer))
    response = client.post(
        "/users",
        json={
            "email": email,
            "first_name": "A",
            "last_name": "B",
            "password": "long enough password",
            "customer_name": unique("c"),
        },
        headers={"X-API-Key": key},
    )
    assert response.status_code == 403
    assert db.scalar(select(func.count()).select_from(User)) == users_before
    assert db.scalar(select(func.count()).select_from(Customer)) == customers_before


def test_a_key_next_to_a_bearer_token_is_refused_too(db: Session, client: TestClient) -> None:
    admin = create_admin(db)
    headers = {**bearer_token(client, admin), "X-API-Key": create_api_key(db, admin)}
    assert client.get("/api-keys", headers=headers).status_code == 403


def test_an_empty_key_is_a_key_sent(db: Session, client: TestClient) -> None:
    headers = {**bearer_token(client, create_admin(db)), "X-API-Key": ""}
    assert client.get("/users", headers=headers).status_code == 403


def test_routes_that_take_keys_still_take_them(db: Session, client: TestClient) -> None:
    key = create_api_key(db, create_admin(db))
    assert client.get("/users/me", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/jobs", headers={"X-API-Key": key}).status_code == 200


def test_without_a_key_the_routes_answer_as_before(db: Session, client: TestClient) -> None:
    headers = bearer_token(client, create_admin(db))
    assert client.get("/api-keys", headers=headers).status_code == 200
    assert client.get("/users", headers=headers).status_code == 200
