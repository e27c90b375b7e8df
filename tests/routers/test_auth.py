"""Logging in and out, session tokens, throttling, CSRF, and what responses never contain."""

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.cookies import CSRF_COOKIE, SESSION_COOKIE
from app.dependencies import Ingester
from app.internal.security import create_access_token, csrf_token_for
from app.main import app
from app.models import ApiKey, User, UserSession
from config import config
from tests.helpers.app import extra_routes
from tests.helpers.factories import (
    PASSWORD,
    bearer_token,
    create_api_key,
    create_user,
    log_in,
)

WRONG_CREDENTIALS = {"detail": "Incorrect email or password"}
NOT_AUTHENTICATED = {"detail": "Not authenticated: log in again"}
FOREIGN_ORIGIN = "https://evil.example"
NEW_KEY = {"name": "ci", "scopes": ["read"]}


@pytest.fixture
def second_client(api: None) -> Iterator[TestClient]:
    """Another browser, with its own cookies, on the same app and test session."""
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


def _set_cookies(response: Response) -> dict[str, dict[str, str]]:
    """The cookies a response sets: name -> attributes (lower-case names; `value` included)."""
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        cookie = {"value": value}
        for attribute in attributes:
            key, _, attribute_value = attribute.partition("=")
            cookie[key.lower()] = attribute_value
        cookies[name] = cookie
    return cookies


def _login(client: TestClient, email: str, password: str = PASSWORD) -> Response:
    return client.post("/auth/login", json={"email": email, "password": password})


def _session_token(client: TestClient) -> str:
    token = client.cookies.get(SESSION_COOKIE)
    assert token is not None
    return token


def _use_session_cookie(client: TestClient, token: str) -> None:
    client.cookies.delete(SESSION_COOKIE)  # else both are sent, and the server's wins
    client.cookies.set(SESSION_COOKIE, token)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _secret() -> str:
    return config.settings.secret_key.get_secret_value()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _me(client: TestClient, token: str) -> Response:
    return client.get("/users/me", headers={"Authorization": f"Bearer {token}"})


# Logging in


def test_login_answers_the_user_and_a_csrf_token(client: TestClient, db: Session) -> None:
    user = create_user(db)
    response = _login(client, user.email)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"user", "csrf_token", "expires_at"}
    assert body["user"]["id"] == user.id
    assert body["user"]["email"] == user.email
    assert "password_hash" not in body["user"]
    assert body["csrf_token"] == client.cookies.get(CSRF_COOKIE)
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert datetime.now(UTC) < expires_at <= datetime.now(UTC) + timedelta(minutes=60)
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/users/me").json()["id"] == user.id


def test_login_cookies_are_httponly_lax_and_scoped_to_the_site(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "access_token_ttl_minutes", 10)
    user = create_user(db)
    cookies = _set_cookies(_login(client, user.email))
    assert set(cookies) == {SESSION_COOKIE, CSRF_COOKIE}

    session_cookie = cookies[SESSION_COOKIE]
    assert "httponly" in session_cookie
    assert session_cookie["samesite"].lower() == "lax"
    assert session_cookie["path"] == "/"
    assert 590 <= int(session_cookie["max-age"]) <= 600
    assert "domain" not in session_cookie
    assert "secure" not in session_cookie  # off in tests by default; see the next test

    csrf_cookie = cookies[CSRF_COOKIE]
    assert "httponly" not in csrf_cookie  # the web app reads it
    assert csrf_cookie["samesite"].lower() == "lax"
    assert csrf_cookie["path"] == "/"
    assert int(csrf_cookie["max-age"]) == config.settings.session_ttl_hours * 3600


def test_secure_cookies_are_secure_host_prefixed_and_still_work(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "secure_cookies", True)
    user = create_user(db)
    response = _login(client, user.email)
    cookies = _set_cookies(response)
    assert set(cookies) == {f"__Host-{SESSION_COOKIE}", f"__Host-{CSRF_COOKIE}"}
    for cookie in cookies.values():
        assert "secure" in cookie
        assert cookie["path"] == "/"
        assert "domain" not in cookie
    assert "httponly" in cookies[f"__Host-{SESSION_COOKIE}"]

    assert client.get("/users/me").json()["id"] == user.id
    csrf = {"X-CSRF-Token": response.json()["csrf_token"]}
    assert client.post("/api-keys", json=NEW_KEY, headers=csrf).status_code == 201


def test_the_email_is_matched_case_insensitively(client: TestClient, db: Session) -> None:
    user = create_user(db)
    assert _login(client, user.email.upper()).status_code == 200


def test_unknown_email_and_wrong_password_answer_alike(client: TestClient, db: Session) -> None:
    user = create_user(db)
    unknown = _login(client, "nobody@example.com")
    wrong = _login(client, user.email, "not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == WRONG_CREDENTIALS
    assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")
    assert _set_cookies(unknown) == _set_cookies(wrong) == {}
    assert not client.cookies


def test_unknown_email_costs_the_same_password_work(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Costly enough that skipping the hash would show plainly against request overhead.
    monkeypatch.setattr(config.settings, "password_hash_time_cost", 20)
    monkeypatch.setattr(config.settings, "password_hash_memory_kib", 4096)
    monkeypatch.setattr(config.settings, "login_max_failures", 100)
    user = create_user(db)

    def duration(email: str) -> float:
        started = time.perf_counter()
        assert _login(client, email, "not the password").status_code == 401
        return time.perf_counter() - started

    _login(client, "warm-up@example.com")
    # Interleaved and the fastest of each kept, so a burst of load slows both alike. Without
    # the dummy hash, an unknown email would take a small fraction of a wrong password's time.
    unknown, wrong = [], []
    for _ in range(5):
        unknown.append(duration("nobody@example.com"))
        wrong.append(duration(user.email))
    assert min(unknown) > 0.3 * min(wrong)


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": ""}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "remember": True}, "remember"),
    ],
)
def test_malformed_login_is_422_naming_the_field(
    client: TestClient, credentials: dict[str, object], field: str
) -> None:
    response = client.post("/auth/login", json=credentials)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


def test_an_inactive_user_cannot_log_in(client: TestClient, db: Session) -> None:
    user = create_user(db, is_active=False)
    response = _login(client, user.email)
    assert response.status_code == 401
    assert response.json() == WRONG_CREDENTIALS


def test_the_token_endpoint_answers_a_bearer_token(client: TestClient, db: Session) -> None:
    user = create_user(db)
    response = client.post("/auth/token", data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert response.headers["cache-control"] == "no-store"
    assert _set_cookies(response) == {}
    assert _me(client, body["access_token"]).json()["id"] == user.id


def test_the_token_endpoint_refuses_a_wrong_password(client: TestClient, db: Session) -> None:
    user = create_user(db)
    response = client.post("/auth/token", data={"username": user.email, "password": "nope"})
    assert response.status_code == 401
    assert response.json() == WRONG_CREDENTIALS


# Throttling


@pytest.fixture
def three_failures(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(config.settings, "login_max_failures", 3)
    return 3


def _fail(client: TestClient, user: User, times: int) -> None:
    for _ in range(times):
        assert _login(client, user.email, "not the password").status_code == 401


def test_repeated_failures_are_throttled_even_with_the_right_password(
    client: TestClient, db: Session, three_failures: int
) -> None:
    user = create_user(db)
    _fail(client, user, three_failures)

    response = _login(client, user.email)
    assert response.status_code == 429
    assert "try again later" in response.json()["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= config.settings.login_failure_window_minutes * 60 + 1
    assert not client.cookies

    assert _login(client, user.email, "not the password").status_code == 429
    form = {"username": user.email, "password": PASSWORD}
    assert client.post("/auth/token", data=form).status_code == 429


def test_throttling_is_per_account(client: TestClient, db: Session, three_failures: int) -> None:
    throttled, other = create_user(db), create_user(db)
    _fail(client, throttled, three_failures)
    assert _login(client, throttled.email).status_code == 429
    assert _login(client, other.email).status_code == 200


# Session tokens


@pytest.mark.parametrize(
    "path", ["/users/me", "/api-keys", "/customers", "/users/1", "/api-keys/1"]
)
def test_requests_without_credentials_are_401(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def _forge(kind: str, claims: dict[str, Any]) -> str:
    """A token that names a live session but is wrong in one way."""
    if kind == "HS512":
        return jwt.encode(claims, _secret(), algorithm="HS512")
    if kind == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if kind == "other secret":
        return jwt.encode(claims, "another-secret-key-that-is-long-enough-too", algorithm="HS256")
    if kind == "tampered":
        header, _, signature = jwt.encode(claims, _secret(), algorithm="HS256").split(".")
        return f"{header}.{_b64({**claims, 'exp': claims['exp'] + 3600})}.{signature}"
    if kind == "expired":
        now = datetime.now(UTC)
        return create_access_token(
            user_id=int(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            issued_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1),
        )
    assert kind == "garbage"
    return "not.a.token"


FORGERIES = ["HS512", "alg none", "other secret", "tampered", "expired", "garbage"]


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
@pytest.mark.parametrize("kind", FORGERIES)
def test_a_bad_bearer_token_is_401(client: TestClient, db: Session, kind: str) -> None:
    token = bearer_token(client, create_user(db))["Authorization"].removeprefix("Bearer ")
    claims = _claims(token)
    # The same claims signed properly pass: the forgery fails for its flaw alone.
    assert _me(client, jwt.encode(claims, _secret(), algorithm="HS256")).status_code == 200
    response = _me(client, _forge(kind, claims))
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
@pytest.mark.parametrize("kind", FORGERIES)
def test_a_bad_session_cookie_is_401(client: TestClient, db: Session, kind: str) -> None:
    log_in(client, create_user(db))
    claims = _claims(_session_token(client))
    _use_session_cookie(client, jwt.encode(claims, _secret(), algorithm="HS256"))
    assert client.get("/users/me").status_code == 200
    _use_session_cookie(client, _forge(kind, claims))
    response = client.get("/users/me")
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


def test_a_token_for_another_users_session_is_401(client: TestClient, db: Session) -> None:
    user, other = create_user(db), create_user(db)
    claims = _claims(bearer_token(client, user)["Authorization"].removeprefix("Bearer "))
    forged = jwt.encode({**claims, "sub": str(other.id)}, _secret(), algorithm="HS256")
    assert _me(client, forged).status_code == 401


def test_a_token_of_an_expired_session_is_401(client: TestClient, db: Session) -> None:
    user = create_user(db)
    headers = bearer_token(client, user)
    db.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    assert client.get("/users/me", headers=headers).status_code == 401


def test_a_token_past_half_its_life_is_renewed_in_the_cookie(
    client: TestClient, db: Session
) -> None:
    log_in(client, create_user(db))
    claims = _claims(_session_token(client))
    now = datetime.now(UTC)
    old = create_access_token(
        user_id=int(claims["sub"]),
        session_id=uuid.UUID(claims["sid"]),
        issued_at=now - timedelta(minutes=50),
        expires_at=now + timedelta(minutes=10),
    )
    _use_session_cookie(client, old)
    response = client.get("/users/me")
    assert response.status_code == 200
    renewed = _set_cookies(response)[SESSION_COOKIE]
    assert "httponly" in renewed
    new_claims = _claims(renewed["value"])
    assert new_claims["sid"] == claims["sid"]
    assert new_claims["exp"] > int((now + timedelta(minutes=50)).timestamp())


def test_a_fresh_token_is_not_renewed(client: TestClient, db: Session) -> None:
    log_in(client, create_user(db))
    assert _set_cookies(client.get("/users/me")) == {}


# Logging out


def test_logout_ends_the_session_and_clears_its_cookies(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    token = _session_token(client)
    other_session = bearer_token(client, user)

    response = client.post("/auth/logout", headers=login.headers)
    assert response.status_code == 204
    cleared = _set_cookies(response)
    assert set(cleared) == {SESSION_COOKIE, CSRF_COOKIE}
    assert all(cookie["max-age"] == "0" for cookie in cleared.values())
    assert not client.cookies

    assert client.get("/users/me").status_code == 401
    assert _me(client, token).status_code == 401
    _use_session_cookie(client, token)
    assert client.get("/users/me").status_code == 401
    assert client.get("/users/me", headers=other_session).status_code == 200


def test_logout_by_bearer_ends_that_token(client: TestClient, db: Session) -> None:
    headers = bearer_token(client, create_user(db))
    assert client.post("/auth/logout", headers=headers).status_code == 204
    assert client.get("/users/me", headers=headers).status_code == 401


def test_logout_without_the_csrf_token_is_refused(client: TestClient, db: Session) -> None:
    log_in(client, create_user(db))
    assert client.post("/auth/logout").status_code == 403
    assert client.get("/users/me").status_code == 200


def test_logout_all_ends_every_session_of_the_user(
    client: TestClient, second_client: TestClient, db: Session
) -> None:
    user, bystander = create_user(db), create_user(db)
    login = log_in(client, user)
    log_in(second_client, user)
    bearer = bearer_token(client, user)
    bystander_bearer = bearer_token(client, bystander)
    assert second_client.get("/users/me").status_code == 200

    assert client.post("/auth/logout-all", headers=login.headers).status_code == 204
    assert client.get("/users/me").status_code == 401
    assert second_client.get("/users/me").status_code == 401
    assert client.get("/users/me", headers=bearer).status_code == 401
    assert client.get("/users/me", headers=bystander_bearer).status_code == 200
    # Logging in again starts a new session.
    log_in(second_client, user)
    assert second_client.get("/users/me").status_code == 200


# CSRF


def _key_count(db: Session, user: User) -> int:
    return len(db.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).all())


def test_a_cookie_post_needs_the_right_csrf_token(
    client: TestClient, second_client: TestClient, db: Session
) -> None:
    user = create_user(db)
    login = log_in(client, user)
    other_login = log_in(second_client, user)
    refused = [
        client.post("/api-keys", json=NEW_KEY),
        client.post("/api-keys", json=NEW_KEY, headers={"X-CSRF-Token": "wrong"}),
        client.post("/api-keys", json=NEW_KEY, headers=other_login.headers),
        client.post("/api-keys", json=NEW_KEY, headers={"X-CSRF-Token": ""}),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert "X-CSRF-Token" in refused[0].json()["detail"]
    assert _key_count(db, user) == 0

    assert client.post("/api-keys", json=NEW_KEY, headers=login.headers).status_code == 201
    assert _key_count(db, user) == 1


def test_the_csrf_token_is_the_sessions_own(client: TestClient, db: Session) -> None:
    login = log_in(client, create_user(db))
    session_id = uuid.UUID(_claims(_session_token(client))["sid"])
    assert login.csrf_token == csrf_token_for(session_id)


def test_a_cookie_post_from_a_foreign_origin_is_refused(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    foreign = client.post(
        "/api-keys", json=NEW_KEY, headers={**login.headers, "Origin": FOREIGN_ORIGIN}
    )
    assert foreign.status_code == 403
    assert FOREIGN_ORIGIN in foreign.json()["detail"]
    null_origin = client.post(
        "/api-keys", json=NEW_KEY, headers={**login.headers, "Origin": "null"}
    )
    assert null_origin.status_code == 403
    assert _key_count(db, user) == 0

    own = client.post(
        "/api-keys", json=NEW_KEY, headers={**login.headers, "Origin": "https://testserver"}
    )
    assert own.status_code == 201


def test_a_cookie_post_from_an_allowed_origin_passes(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "cors_origins", ["https://app.example"])
    login = log_in(client, create_user(db))
    headers = {**login.headers, "Origin": "https://app.example"}
    assert client.post("/api-keys", json=NEW_KEY, headers=headers).status_code == 201
    headers = {**login.headers, "Origin": FOREIGN_ORIGIN}
    assert client.post("/api-keys", json=NEW_KEY, headers=headers).status_code == 403


def test_a_cookie_delete_needs_the_csrf_token(client: TestClient, db: Session) -> None:
    user = create_user(db)
    login = log_in(client, user)
    key = create_api_key(db, user)
    key_id = db.scalars(select(ApiKey.id).where(ApiKey.user_id == user.id)).one()
    assert client.delete(f"/api-keys/{key_id}").status_code == 403
    assert client.get("/users/me", headers={"X-API-Key": key}).status_code == 200
    assert client.delete(f"/api-keys/{key_id}", headers=login.headers).status_code == 204
    assert client.get("/users/me", headers={"X-API-Key": key}).status_code == 401


def test_safe_cookie_requests_need_no_csrf_token(client: TestClient, db: Session) -> None:
    log_in(client, create_user(db))
    assert client.get("/users/me", headers={"Origin": FOREIGN_ORIGIN}).status_code == 200


def test_a_bearer_post_needs_no_csrf_token(client: TestClient, db: Session) -> None:
    headers = {**bearer_token(client, create_user(db)), "Origin": FOREIGN_ORIGIN}
    assert client.post("/api-keys", json=NEW_KEY, headers=headers).status_code == 201


probe = APIRouter(prefix="/_probe")


@probe.post("/ingest")
def ingest(caller: Ingester) -> dict[str, int]:
    return {"user_id": caller.user.id}


@pytest.fixture
def probe_client(client: TestClient) -> Iterator[TestClient]:
    """The real app with an unsafe route that scripts may call (no such route exists yet)."""
    with extra_routes(probe):
        yield client


def test_an_api_key_post_needs_no_csrf_token(probe_client: TestClient, db: Session) -> None:
    user = create_user(db)
    key = create_api_key(db, user)
    response = probe_client.post(
        "/_probe/ingest", headers={"X-API-Key": key, "Origin": FOREIGN_ORIGIN}
    )
    assert response.status_code == 200
    assert response.json() == {"user_id": user.id}


def test_the_same_post_by_cookie_needs_the_csrf_token(
    probe_client: TestClient, db: Session
) -> None:
    login = log_in(probe_client, create_user(db))
    assert probe_client.post("/_probe/ingest").status_code == 403
    assert probe_client.post("/_probe/ingest", headers=login.headers).status_code == 200


# What responses never contain


def _property_names(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                yield from value
            yield from _property_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _property_names(item)


def test_no_schema_in_the_openapi_document_has_a_hash_or_digest(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    names = set(_property_names(document))
    assert {"email", "prefix", "csrf_token", "access_token"} <= names  # the walk finds fields
    assert not names & {"password_hash", "digest", "failed_login_count"}
    for name in ("UserPublic", "LoginPublic", "ApiKeyPublic", "ApiKeyCreated"):
        assert name in document["components"]["schemas"]


def test_the_login_response_holds_no_password_hash(client: TestClient, db: Session) -> None:
    user = create_user(db)
    response = _login(client, user.email)
    assert response.status_code == 200
    assert user.password_hash not in response.text
    assert "$argon2" not in response.text
