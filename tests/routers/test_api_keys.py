"""API keys: created, listed and revoked by their owners; refused when anything is off."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.internal import api_key_format
from app.models import ApiKey, Role, Scope, User
from config import config
from tests.helpers.capture import captured_statements
from tests.helpers.factories import (
    bearer_token,
    create_admin,
    create_api_key,
    create_user,
    log_in,
)

MISSING_ID = 987_654_321
INVALID_KEY = {"detail": "Invalid API key"}


def _new_key(**fields: object) -> dict[str, Any]:
    return {"name": "nightly pipeline", "scopes": ["ingest", "read"], **fields}


def _key_row(db: Session, plaintext: str) -> ApiKey:
    return db.scalars(select(ApiKey).where(ApiKey.digest == api_key_format.digest(plaintext))).one()


def _me_with(client: TestClient, key: str) -> Any:
    return client.get("/users/me", headers={"X-API-Key": key})


# Creating


def test_a_new_key_is_answered_whole_once_and_stored_as_a_digest(
    client: TestClient, db: Session
) -> None:
    user = create_user(db)
    login = log_in(client, user)
    response = client.post("/api-keys", json=_new_key(), headers=login.headers)
    assert response.status_code == 201
    body = response.json()
    key = body["key"]
    assert api_key_format.is_well_formed(key)
    assert body["prefix"] == key[:12]
    assert body["user_id"] == user.id
    assert (body["name"], body["scopes"]) == ("nightly pipeline", ["ingest", "read"])
    assert (body["expires_at"], body["last_used_at"], body["revoked_at"]) == (None, None, None)

    row = _key_row(db, key)
    assert row.id == body["id"]
    assert row.digest not in response.text
    assert "digest" not in body
    assert key not in (row.digest, row.prefix, row.name)

    assert _me_with(client, key).json()["id"] == user.id
    read_back = client.get(f"/api-keys/{row.id}")
    assert "key" not in read_back.json()
    assert key not in read_back.text


def test_a_key_may_expire_later(client: TestClient, db: Session) -> None:
    headers = bearer_token(client, create_user(db))
    expires_at = datetime.now(UTC) + timedelta(days=30)
    response = client.post(
        "/api-keys", json=_new_key(expires_at=expires_at.isoformat()), headers=headers
    )
    assert response.status_code == 201
    assert datetime.fromisoformat(response.json()["expires_at"]) == expires_at
    assert _me_with(client, response.json()["key"]).status_code == 200


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"expires_at": "2020-01-01T00:00:00"}, "expires_at", id="naive expiry"),
        pytest.param({"expires_at": "soon"}, "expires_at", id="not a time"),
        pytest.param({"scopes": []}, "scopes", id="no scope"),
        pytest.param({"scopes": ["admin"]}, 0, id="unknown scope"),
        pytest.param({"scopes": ["read", "read"]}, "scopes", id="repeated scope"),
        pytest.param({"name": ""}, "name", id="empty name"),
        pytest.param({"name": "x" * 101}, "name", id="long name"),
        pytest.param({"user_id": 1}, "user_id", id="someone else's key"),
        pytest.param({"key": "trk_mine"}, "key", id="chosen key"),
    ],
)
def test_a_malformed_key_request_is_422_naming_the_field(
    client: TestClient, db: Session, fields: dict[str, object], field: str | int
) -> None:
    user = create_user(db)
    response = client.post("/api-keys", json=_new_key(**fields), headers=bearer_token(client, user))
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]
    assert db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).all() == []


def test_a_key_cannot_be_born_expired(client: TestClient, db: Session) -> None:
    user = create_user(db)
    past = datetime.now(UTC) - timedelta(minutes=1)
    response = client.post(
        "/api-keys", json=_new_key(expires_at=past.isoformat()), headers=bearer_token(client, user)
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "expires_at must be in the future"}
    assert db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).all() == []


def test_a_clients_key_cannot_hold_the_configure_scope(client: TestClient, db: Session) -> None:
    user = create_user(db)
    response = client.post(
        "/api-keys",
        json=_new_key(scopes=["ingest", "configure"]),
        headers=bearer_token(client, user),
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "the 'configure' scope is for administrators' keys only"}
    assert db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).all() == []


def test_an_admins_key_may_hold_every_scope(client: TestClient, db: Session) -> None:
    admin = create_admin(db)
    scopes = ["ingest", "read", "configure"]
    response = client.post(
        "/api-keys", json=_new_key(scopes=scopes), headers=bearer_token(client, admin)
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == scopes
    assert _key_row(db, response.json()["key"]).scopes == [Scope(scope) for scope in scopes]


@pytest.mark.parametrize("role", [Role.CLIENT, Role.ADMIN])
def test_account_routes_refuse_api_keys(client: TestClient, db: Session, role: Role) -> None:
    user = create_user(db, role=role)
    scopes = (Scope.INGEST, Scope.READ, Scope.CONFIGURE) if role == Role.ADMIN else (Scope.READ,)
    key = create_api_key(db, user, scopes=scopes)
    key_id = _key_row(db, key).id
    headers = {"X-API-Key": key}
    responses = [
        client.post("/api-keys", json=_new_key(), headers=headers),
        client.get("/api-keys", headers=headers),
        client.get(f"/api-keys/{key_id}", headers=headers),
        client.delete(f"/api-keys/{key_id}", headers=headers),
        client.post("/customers", json={"name": "by key"}, headers=headers),
        client.patch(f"/users/{user.id}", json={"is_active": False}, headers=headers),
    ]
    assert [response.status_code for response in responses] == [403] * 6
    assert len(db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).all()) == 1
    assert _me_with(client, key).status_code == 200


# Reading


def test_a_user_lists_only_its_own_keys(client: TestClient, db: Session) -> None:
    user, other = create_user(db), create_user(db)
    own = [create_api_key(db, user) for _ in range(2)]
    create_api_key(db, other)
    log_in(client, user)
    response = client.get("/api-keys")
    assert response.status_code == 200
    items = response.json()["items"]
    assert {item["id"] for item in items} == {_key_row(db, key).id for key in own}
    for key in own:
        assert key not in response.text
        assert _key_row(db, key).digest not in response.text
    assert all("key" not in item and "digest" not in item for item in items)
    assert client.get("/api-keys", params={"user_id": user.id}).status_code == 200


def test_key_pages_walk_every_row_once(client: TestClient, db: Session) -> None:
    user = create_user(db)
    created = {_key_row(db, create_api_key(db, user)).id for _ in range(3)}
    headers = bearer_token(client, user)
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api-keys", params=params, headers=headers).json()
        assert len(page["items"]) == 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created)


def test_an_admin_lists_and_reads_anyones_keys(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    user = create_user(db)
    key_id = _key_row(db, create_api_key(db, user)).id
    listed = client.get("/api-keys", params={"user_id": user.id}, headers=admin).json()
    assert [item["id"] for item in listed["items"]] == [key_id]
    assert client.get("/api-keys", headers=admin).json()["items"] == []  # the admin's own
    assert client.get(f"/api-keys/{key_id}", headers=admin).json()["user_id"] == user.id


def test_another_users_keys_look_missing(client: TestClient, db: Session) -> None:
    user, stranger = create_user(db), create_user(db)
    stranger_key = create_api_key(db, stranger)
    stranger_key_id = _key_row(db, stranger_key).id
    login = log_in(client, user)

    missing = client.get(f"/api-keys/{MISSING_ID}")
    hidden = client.get(f"/api-keys/{stranger_key_id}")
    assert hidden.status_code == missing.status_code == 404
    assert missing.json() == {"detail": f"API key {MISSING_ID} not found"}
    assert hidden.json() == {"detail": f"API key {stranger_key_id} not found"}

    missing = client.delete(f"/api-keys/{MISSING_ID}", headers=login.headers)
    hidden = client.delete(f"/api-keys/{stranger_key_id}", headers=login.headers)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == {"detail": f"API key {stranger_key_id} not found"}
    assert _me_with(client, stranger_key).status_code == 200

    missing = client.get("/api-keys", params={"user_id": MISSING_ID})
    hidden = client.get("/api-keys", params={"user_id": stranger.id})
    assert hidden.status_code == missing.status_code == 404
    assert missing.json() == {"detail": f"User {MISSING_ID} not found"}
    assert hidden.json() == {"detail": f"User {stranger.id} not found"}


# Revoking


def test_a_revoked_key_stops_at_once(client: TestClient, db: Session) -> None:
    user = create_user(db)
    key = create_api_key(db, user)
    key_id = _key_row(db, key).id
    login = log_in(client, user)
    assert _me_with(client, key).status_code == 200

    response = client.delete(f"/api-keys/{key_id}", headers=login.headers)
    assert response.status_code == 204
    assert response.content == b""
    refused = _me_with(client, key)
    assert refused.status_code == 401
    assert refused.json() == INVALID_KEY

    revoked_at = client.get(f"/api-keys/{key_id}").json()["revoked_at"]
    assert revoked_at is not None
    assert client.delete(f"/api-keys/{key_id}", headers=login.headers).status_code == 204
    assert client.get(f"/api-keys/{key_id}").json()["revoked_at"] == revoked_at


def test_an_admin_may_revoke_anyones_key(client: TestClient, db: Session) -> None:
    admin = bearer_token(client, create_admin(db))
    key = create_api_key(db, create_user(db))
    assert client.delete(f"/api-keys/{_key_row(db, key).id}", headers=admin).status_code == 204
    assert _me_with(client, key).status_code == 401


# Authenticating with a key


def test_a_malformed_key_is_refused_without_a_query(client: TestClient, db: Session) -> None:
    key = create_api_key(db, create_user(db))
    position = 20
    typo = key[:position] + ("a" if key[position] != "a" else "b") + key[position + 1 :]
    unknown = api_key_format.generate_api_key()  # well formed, never issued
    for bad_key in ("garbage", typo, key[:-1], key.replace("trk_", "trk-")):
        with captured_statements() as statements:
            response = _me_with(client, bad_key)
        assert response.status_code == 401
        assert response.json() == INVALID_KEY
        assert not [sql for sql in statements if "api_keys" in sql]
    with captured_statements() as statements:
        response = _me_with(client, unknown)
    assert (response.status_code, response.json()) == (401, INVALID_KEY)
    assert [sql for sql in statements if "api_keys" in sql]


def test_an_expired_key_is_refused(client: TestClient, db: Session) -> None:
    user = create_user(db)
    expired = create_api_key(db, user, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    live = create_api_key(db, user, expires_at=datetime.now(UTC) + timedelta(hours=1))
    response = _me_with(client, expired)
    assert response.status_code == 401
    assert response.json() == {"detail": "API key expired"}
    assert _me_with(client, live).status_code == 200
    db.execute(
        update(ApiKey)
        .where(ApiKey.id == _key_row(db, live).id)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    assert _me_with(client, live).status_code == 401


def test_a_deactivated_owners_key_is_refused(client: TestClient, db: Session) -> None:
    user = create_user(db)
    key = create_api_key(db, user)
    assert _me_with(client, key).status_code == 200
    db.execute(update(User).where(User.id == user.id).values(is_active=False))
    response = _me_with(client, key)
    assert response.status_code == 401
    assert response.json() == INVALID_KEY


def test_a_key_without_the_scope_is_403(client: TestClient, db: Session) -> None:
    user = create_user(db)
    ingest_only = create_api_key(db, user, scopes=(Scope.INGEST,))
    read_only = create_api_key(db, user, scopes=(Scope.READ,))
    response = client.get("/customers", headers={"X-API-Key": ingest_only})
    assert response.status_code == 403
    assert response.json() == {"detail": "This API key lacks the 'read' scope"}
    assert client.get("/customers", headers={"X-API-Key": read_only}).status_code == 200


def test_using_a_key_records_when(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "activity_write_interval_seconds", 3600)
    user = create_user(db)
    key = create_api_key(db, user)
    key_id = _key_row(db, key).id
    headers = bearer_token(client, user)
    assert client.get(f"/api-keys/{key_id}", headers=headers).json()["last_used_at"] is None

    before = datetime.now(UTC)
    assert _me_with(client, key).status_code == 200
    first_use = client.get(f"/api-keys/{key_id}", headers=headers).json()["last_used_at"]
    assert first_use is not None
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(first_use) <= datetime.now(UTC)

    # Within the write interval a use is not written again (one row update per interval).
    assert _me_with(client, key).status_code == 200
    assert client.get(f"/api-keys/{key_id}", headers=headers).json()["last_used_at"] == first_use

    monkeypatch.setattr(config.settings, "activity_write_interval_seconds", 0)
    assert _me_with(client, key).status_code == 200
    latest = client.get(f"/api-keys/{key_id}", headers=headers).json()["last_used_at"]
    assert datetime.fromisoformat(latest) > datetime.fromisoformat(first_use)
