"""Sign-up, the caller's own account, and admins managing users."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Customer, Role, Scope, User
from config import config
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


def _new_user(**fields: object) -> dict[str, Any]:
    return {
        "email": f"{unique('new')}@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "password": PASSWORD,
        **fields,
    }


def _login_status(client: TestClient, email: str, password: str = PASSWORD) -> int:
    response = client.post("/auth/login", json={"email": email, "password": password})
    client.cookies.clear()
    return response.status_code


def _error_fields(response: Any) -> list[str]:
    return [error["loc"][-1] for error in response.json()["detail"]]


def _count(db: Session, model: type[User] | type[Customer]) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


# Sign-up


def test_sign_up_creates_a_client_of_a_new_customer(client: TestClient, db: Session) -> None:
    email = f"{unique('Ada')}@Example.COM"
    response = client.post("/users", json=_new_user(email=email, customer_name="  St Mary's  "))
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == email.lower()
    assert body["role"] == "client"
    assert body["is_active"] is True
    customer = db.get(Customer, body["customer_id"])
    assert customer is not None
    assert customer.name == "St Mary's"
    user = db.get(User, body["id"])
    assert user is not None
    assert user.password_hash not in response.text
    assert "password" not in " ".join(body)
    assert _login_status(client, email) == 200


def test_sign_up_needs_a_customer_name(client: TestClient, db: Session) -> None:
    users_before = _count(db, User)
    response = client.post("/users", json=_new_user())
    assert response.status_code == 422
    assert response.json() == {"detail": "customer_name is required to sign up"}
    assert _count(db, User) == users_before


def test_sign_up_with_a_taken_email_is_409(client: TestClient, db: Session) -> None:
    existing = create_user(db)
    customers_before = _count(db, Customer)
    response = client.post(
        "/users", json=_new_user(email=existing.email.upper(), customer_name=unique("Org"))
    )
    assert response.status_code == 409
    assert existing.email in response.json()["detail"]
    assert _count(db, Customer) == customers_before


def test_sign_up_with_a_taken_customer_name_is_409(client: TestClient, db: Session) -> None:
    customer = create_customer(db)
    response = client.post("/users", json=_new_user(customer_name=customer.name))
    assert response.status_code == 409


@pytest.mark.parametrize("role", ["admin", "client", None])
def test_sign_up_cannot_choose_a_role_or_customer(
    client: TestClient, db: Session, role: str | None
) -> None:
    chosen = {"role": role} if role else {"customer_id": create_customer(db).id}
    users_before = _count(db, User)
    response = client.post("/users", json=_new_user(customer_name=unique("Org"), **chosen))
    assert response.status_code == 403
    assert response.json() == {"detail": "Only admins may set role or customer_id"}
    assert _count(db, User) == users_before


@pytest.mark.parametrize("field", ["is_active", "password_hash", "id", "failed_login_count"])
def test_sign_up_refuses_unknown_fields(client: TestClient, field: str) -> None:
    payload = _new_user(customer_name=unique("Org"), **{field: 1})
    response = client.post("/users", json=payload)
    assert response.status_code == 422
    assert _error_fields(response) == [field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 129}, "password"),
        ({"first_name": "   "}, "first_name"),
        ({"customer_name": ""}, "customer_name"),
    ],
)
def test_a_malformed_sign_up_is_422_naming_the_field(
    client: TestClient, fields: dict[str, object], field: str
) -> None:
    response = client.post("/users", json=_new_user(**{"customer_name": "Org", **fields}))
    assert response.status_code == 422
    assert _error_fields(response) == [field]


def test_sign_up_can_be_disabled(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "signup_enabled", False)
    response = client.post("/users", json=_new_user(customer_name=unique("Org")))
    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]
    # Admins still create accounts.
    admin = bearer_token(client, create_admin(db))
    payload = _new_user(customer_id=create_customer(db).id)
    assert client.post("/users", json=payload, headers=admin).status_code == 201


def test_a_client_cannot_create_users(client: TestClient, db: Session) -> None:
    client_user = create_user(db)
    login = log_in(client, client_user)
    payload = _new_user(customer_id=client_user.customer_id)
    assert client.post("/users", json=payload, headers=login.headers).status_code == 403
    payload = _new_user(customer_name=unique("Org"))
    assert client.post("/users", json=payload, headers=login.headers).status_code == 403


# The caller's own account


def test_me_answers_the_caller_however_authenticated(client: TestClient, db: Session) -> None:
    user = create_user(db)
    key = create_api_key(db, user, scopes=(Scope.READ,))
    by_bearer = client.get("/users/me", headers=bearer_token(client, user))
    by_key = client.get("/users/me", headers={"X-API-Key": key})
    log_in(client, user)
    by_cookie = client.get("/users/me")
    for response in (by_bearer, by_key, by_cookie):
        assert response.status_code == 200
        assert response.json()["id"] == user.id
        assert response.json()["email"] == user.email


def test_me_with_an_ingest_only_key_is_403(client: TestClient, db: Session) -> None:
    key = create_api_key(db, create_user(db), scopes=(Scope.INGEST,))
    response = client.get("/users/me", headers={"X-API-Key": key})
    assert response.status_code == 403
    assert "read" in response.json()["detail"]


def test_update_me_changes_names(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    response = client.patch(
        "/users/me", json={"first_name": " Grace ", "last_name": "Hopper"}, headers=login.headers
    )
    assert response.status_code == 200
    assert (response.json()["first_name"], response.json()["last_name"]) == ("Grace", "Hopper")
    db.refresh(user)
    assert (user.first_name, user.last_name) == ("Grace", "Hopper")


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "admin"},
        {"customer_id": 1},
        {"is_active": False},
        {"email": "new@example.com"},
        {"password_hash": "x"},
    ],
)
def test_nobody_sets_their_own_role_customer_or_active_flag(
    client: TestClient, db: Session, fields: dict[str, object]
) -> None:
    user = create_user(db)
    email, customer_id = user.email, user.customer_id
    login = log_in(client, user)
    response = client.patch("/users/me", json=fields, headers=login.headers)
    assert response.status_code == 422
    assert _error_fields(response) == list(fields)
    db.refresh(user)
    assert (user.role, user.customer_id, user.is_active, user.email) == (
        Role.CLIENT,
        customer_id,
        True,
        email,
    )


def test_a_client_cannot_patch_itself_as_a_user(client: TestClient, db: Session) -> None:
    user = create_user(db)
    customer_id = user.customer_id
    login = log_in(client, user)
    other_customer = create_customer(db)
    for fields in (
        {"role": "admin"},
        {"customer_id": other_customer.id},
        {"is_active": True},
        {"first_name": "X"},
    ):
        response = client.patch(f"/users/{user.id}", json=fields, headers=login.headers)
        assert response.status_code == 403
        assert response.json() == {"detail": "Only admins may do this"}
    db.refresh(user)
    assert (user.role, user.customer_id, user.first_name) == (Role.CLIENT, customer_id, "Test")


def test_update_me_refuses_an_api_key(client: TestClient, db: Session) -> None:
    key = create_api_key(db, create_user(db))
    response = client.patch("/users/me", json={"first_name": "X"}, headers={"X-API-Key": key})
    assert response.status_code == 403


# Changing one's password


def test_a_password_change_needs_the_current_password(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    response = client.patch(
        "/users/me", json={"new_password": "a brand new one"}, headers=login.headers
    )
    assert response.status_code == 422
    assert "current_password" in str(response.json()["detail"])
    assert _login_status(client, user.email) == 200


def test_a_wrong_current_password_changes_nothing(client: TestClient, db: Session) -> None:
    user = create_user(db)
    other_session = bearer_token(client, user)
    login = log_in(client, user)
    response = client.patch(
        "/users/me",
        json={"current_password": "not it at all", "new_password": "a brand new one"},
        headers=login.headers,
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "current_password is wrong"}
    assert client.get("/users/me", headers=other_session).status_code == 200
    assert _login_status(client, user.email) == 200
    assert _login_status(client, user.email, "a brand new one") == 401


def test_a_short_new_password_is_422(client: TestClient, db: Session) -> None:
    login = log_in(client, create_user(db))
    response = client.patch(
        "/users/me",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=login.headers,
    )
    assert response.status_code == 422
    assert _error_fields(response) == ["new_password"]


def test_a_password_change_ends_the_other_sessions_only(client: TestClient, db: Session) -> None:
    user = create_user(db)
    other_session = bearer_token(client, user)
    bystander_session = bearer_token(client, create_user(db))
    login = log_in(client, user)
    old_hash = user.password_hash

    response = client.patch(
        "/users/me",
        json={"current_password": PASSWORD, "new_password": "a brand new one"},
        headers=login.headers,
    )
    assert response.status_code == 200
    assert old_hash not in response.text
    db.refresh(user)
    assert user.password_hash != old_hash
    assert user.password_changed_at is not None

    assert client.get("/users/me").status_code == 200  # this session lives on
    assert client.get("/users/me", headers=other_session).status_code == 401
    assert client.get("/users/me", headers=bystander_session).status_code == 200
    assert _login_status(client, user.email, "a brand new one") == 200
    assert _login_status(client, user.email) == 401


# Admins managing users


def test_an_admin_creates_a_client_for_a_customer(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    customer = create_customer(db)
    payload = _new_user(customer_id=customer.id)
    response = client.post("/users", json=payload, headers=admin)
    assert response.status_code == 201
    body = response.json()
    assert (body["role"], body["customer_id"]) == ("client", customer.id)
    assert _login_status(client, payload["email"]) == 200


def test_an_admin_creates_an_admin(client: TestClient, db: Session) -> None:
    login = log_in(client, create_admin(db))
    payload = _new_user(role="admin")
    response = client.post("/users", json=payload, headers=login.headers)
    assert response.status_code == 201
    assert (response.json()["role"], response.json()["customer_id"]) == ("admin", None)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"role": "admin", "customer_id": "existing"}, "An admin belongs to no customer"),
        ({"role": "client"}, "A client user needs a customer_id"),
        ({"customer_id": MISSING_ID}, f"Customer {MISSING_ID} does not exist"),
        ({"customer_name": "New Org"}, "customer_name is for sign-up"),
        ({}, "role is required"),
    ],
)
def test_an_admin_must_name_a_consistent_role_and_customer(
    client: TestClient, db: Session, fields: dict[str, object], detail: str
) -> None:
    admin = bearer_token(client, create_admin(db))
    if fields.get("customer_id") == "existing":
        fields = {**fields, "customer_id": create_customer(db).id}
    response = client.post("/users", json=_new_user(**fields), headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_an_admin_cannot_reuse_an_email(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    existing = create_user(db)
    payload = _new_user(email=existing.email, role="admin")
    assert client.post("/users", json=payload, headers=admin).status_code == 409


def test_an_admin_lists_users_with_filters(client: TestClient, db: Session) -> None:
    admin_user = create_admin(db, email=f"{unique('boss')}@example.com")
    admin = bearer_token(client, admin_user)
    customer, other_customer = create_customer(db), create_customer(db)
    members = [create_user(db, customer=customer) for _ in range(2)]
    outsider = create_user(db, customer=other_customer)

    def ids(**params: str | int) -> set[int]:
        response = client.get("/users", params=params, headers=admin)
        assert response.status_code == 200
        return {item["id"] for item in response.json()["items"]}

    assert ids(customer_id=customer.id) == {user.id for user in members}
    assert ids(customer_id=other_customer.id) == {outsider.id}
    assert admin_user.id in ids(role="admin")
    assert not ids(role="admin") & {user.id for user in [*members, outsider]}
    assert ids(q=outsider.email.split("@")[0].upper()) == {outsider.id}
    assert ids(q="boss", role="admin") == {admin_user.id}
    assert ids(q="%") == set()  # a wildcard is matched literally
    assert ids(customer_id=customer.id, role="admin") == set()


def test_users_pages_walk_every_row_once(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    created = {create_user(db).id for _ in range(4)}
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        response = client.get("/users", params=params, headers=admin)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) == 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert created <= set(seen)
    assert len(seen) == _count(db, User)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"cursor": "not a cursor"}, id="garbage cursor"),
        pytest.param({"cursor": "WyJ4Il0"}, id="cursor naming a string id"),
        pytest.param({"cursor": "WzEsMl0"}, id="cursor of two values"),
        pytest.param({"cursor": "e30"}, id="cursor not a list"),
        pytest.param({"limit": 0}, id="limit 0"),
        pytest.param({"limit": 201}, id="limit over the cap"),
        pytest.param({"role": "owner"}, id="unknown role"),
    ],
)
def test_bad_list_parameters_are_422(
    client: TestClient, db: Session, params: dict[str, str | int]
) -> None:
    admin = bearer_token(client, create_admin(db))
    response = client.get("/users", params=params, headers=admin)
    assert response.status_code == 422
    if "cursor" in params:
        assert response.json() == {
            "detail": "Invalid cursor: pass the next_cursor of a previous page"
        }


def test_a_client_may_not_use_admin_user_routes(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    other = create_user(db)
    assert client.get("/users").status_code == 403
    for user_id in (user.id, other.id, MISSING_ID):
        response = client.patch(
            f"/users/{user_id}", json={"first_name": "X"}, headers=login.headers
        )
        assert response.status_code == 403


def test_a_client_reads_itself_but_no_other_user(client: TestClient, db: Session) -> None:
    user = create_user(db)
    colleague = create_user(db, customer=db.get(Customer, user.customer_id))
    stranger = create_user(db)
    log_in(client, user)
    assert client.get(f"/users/{user.id}").json()["id"] == user.id
    missing = client.get(f"/users/{MISSING_ID}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"User {MISSING_ID} not found"}
    for hidden_user in (stranger, colleague):
        hidden = client.get(f"/users/{hidden_user.id}")
        assert hidden.status_code == missing.status_code
        assert hidden.json() == {"detail": f"User {hidden_user.id} not found"}
        assert hidden.headers.keys() == missing.headers.keys()


def test_an_admin_reads_any_user(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    user = create_user(db)
    response = client.get(f"/users/{user.id}", headers=admin)
    assert response.status_code == 200
    assert response.json()["email"] == user.email
    assert client.get(f"/users/{MISSING_ID}", headers=admin).status_code == 404


def test_an_admin_changes_names_role_and_customer(client: TestClient, db: Session) -> None:
    login = log_in(client, create_admin(db))
    user = create_user(db)
    new_customer = create_customer(db)

    def patch(fields: dict[str, object]) -> dict[str, Any]:
        response = client.patch(f"/users/{user.id}", json=fields, headers=login.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert patch({"first_name": "Grace"})["first_name"] == "Grace"
    assert patch({"customer_id": new_customer.id})["customer_id"] == new_customer.id
    promoted = patch({"role": "admin"})
    assert (promoted["role"], promoted["customer_id"]) == ("admin", None)
    demoted = patch({"role": "client", "customer_id": new_customer.id})
    assert (demoted["role"], demoted["customer_id"]) == ("client", new_customer.id)
    db.refresh(user)
    assert (user.role, user.customer_id, user.first_name) == (Role.CLIENT, new_customer.id, "Grace")


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "client"},  # of an admin: which customer?
        {"customer_id": MISSING_ID},
        {"email": "new@example.com"},
        {"password": "a brand new one"},
    ],
)
def test_an_admin_cannot_make_a_user_inconsistent(
    client: TestClient, db: Session, fields: dict[str, object]
) -> None:
    admin = bearer_token(client, create_admin(db))
    target = create_admin(db) if fields.get("role") == "client" else create_user(db)
    response = client.patch(f"/users/{target.id}", json=fields, headers=admin)
    assert response.status_code == 422
    db.refresh(target)
    assert target.is_admin == (fields.get("role") == "client")


def test_patching_a_missing_user_is_404(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    response = client.patch(f"/users/{MISSING_ID}", json={"first_name": "X"}, headers=admin)
    assert response.status_code == 404


def test_deactivating_a_user_ends_sessions_and_stops_keys(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    user = create_user(db)
    key = create_api_key(db, user)
    session = bearer_token(client, user)
    assert client.get("/users/me", headers={"X-API-Key": key}).status_code == 200

    response = client.patch(f"/users/{user.id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert client.get("/users/me", headers=session).status_code == 401
    assert client.get("/users/me", headers={"X-API-Key": key}).status_code == 401
    assert _login_status(client, user.email) == 401

    # Reactivated, the user logs in again; the sessions ended stay ended.
    client.patch(f"/users/{user.id}", json={"is_active": True}, headers=admin)
    assert _login_status(client, user.email) == 200
    assert client.get("/users/me", headers=session).status_code == 401


@pytest.mark.parametrize("fields", [{"is_active": False}, {"role": "client"}])
def test_an_admin_cannot_deactivate_or_demote_itself(
    client: TestClient, db: Session, fields: dict[str, object]
) -> None:
    admin_user = create_admin(db)
    login = log_in(client, admin_user)
    if "role" in fields:
        fields = {**fields, "customer_id": create_customer(db).id}
    response = client.patch(f"/users/{admin_user.id}", json=fields, headers=login.headers)
    assert response.status_code == 409
    assert response.json() == {"detail": "Admins cannot deactivate or demote themselves"}
    db.refresh(admin_user)
    assert (admin_user.is_admin, admin_user.is_active) == (True, True)
    assert client.get("/users/me").status_code == 200


def test_an_admin_may_patch_itself_otherwise(client: TestClient, db: Session) -> None:
    admin_user = create_admin(db)
    login = log_in(client, admin_user)
    fields: dict[str, object] = {"first_name": "Ada", "role": None, "is_active": None}
    response = client.patch(f"/users/{admin_user.id}", json=fields, headers=login.headers)
    assert response.status_code == 200
    assert (response.json()["first_name"], response.json()["role"]) == ("Ada", "admin")
    fields = {"role": "admin", "is_active": True}
    response = client.patch(f"/users/{admin_user.id}", json=fields, headers=login.headers)
    assert response.status_code == 200


def test_user_responses_hold_no_password_hash(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    user = create_user(db)
    responses = [
        client.get(f"/users/{user.id}", headers=admin),
        client.get("/users", params={"customer_id": user.customer_id}, headers=admin),
        client.patch(f"/users/{user.id}", json={"first_name": "X"}, headers=admin),
    ]
    for response in responses:
        assert response.status_code == 200
        assert user.password_hash not in response.text
        assert "$argon2" not in response.text
