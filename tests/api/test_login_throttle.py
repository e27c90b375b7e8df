"""The login throttle: by account and client address, with a higher ceiling per account, counted
in the database; the client address from the connection, the Lambda event, or a trusted proxy."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.main import app, handler
from app.middleware import client_address_for
from app.models import LoginFailure, User
from app.services.login_throttle import normalized_address
from config import config
from tests.helpers.factories import PASSWORD, create_user, unique
from tests.helpers.lambda_events import LambdaContext, http_api_event, rest_event

ATTACKER, OWNER, ELSEWHERE = "198.51.100.66", "192.0.2.10", "203.0.113.99"


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three failures per account and address, seven per account."""
    monkeypatch.setattr(config.settings, "login_max_failures", 3)
    monkeypatch.setattr(config.settings, "login_account_max_failures", 7)


@pytest.fixture
def at(api: None) -> Any:
    """A client of the real app connecting from a given address."""
    clients: list[TestClient] = []

    def client_at(address: str) -> TestClient:
        client = TestClient(app, base_url="https://testserver", client=(address, 40000))
        clients.append(client)
        return client

    yield client_at
    for client in clients:
        client.close()


def login(client: TestClient, email: str, password: str = PASSWORD) -> int:
    response = client.post("/auth/login", json={"email": email, "password": password})
    return response.status_code


def fail(client: TestClient, email: str, times: int) -> None:
    for _ in range(times):
        assert login(client, email, "not the password") == 401


def failures(db: Session, email: str, address: str | None = None) -> int:
    query = select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email)
    if address is not None:
        query = query.where(LoginFailure.client_address == address)
    return db.scalar(query) or 0


pytestmark = pytest.mark.usefixtures("limits")


def test_an_attacker_elsewhere_cannot_lock_the_owner_out(db: Session, at: Any) -> None:
    user = create_user(db)
    fail(at(ATTACKER), user.email, 3)
    assert login(at(ATTACKER), user.email) == 429  # even with the right password
    assert login(at(OWNER), user.email) == 200


def test_the_throttle_answers_429_with_retry_after(db: Session, at: Any) -> None:
    user = create_user(db)
    fail(at(ATTACKER), user.email, 3)
    response = at(ATTACKER).post("/auth/token", data={"username": user.email, "password": "x"})
    assert response.status_code == 429
    assert "from your address" in response.json()["detail"]
    window = config.settings.login_failure_window_minutes * 60
    assert 0 < int(response.headers["retry-after"]) <= window + 1


def test_a_guess_spread_over_many_addresses_hits_the_account_ceiling(db: Session, at: Any) -> None:
    user = create_user(db)
    for index in range(3):
        fail(at(f"198.51.100.{index}"), user.email, 3 if index < 2 else 1)
    # Seven failures from three addresses: the account is closed to everyone for now.
    response = at(ELSEWHERE).post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert response.json()["detail"] == "Too many failed logins for this account: try again later"
    assert login(at(OWNER), user.email) == 429


def test_unknown_emails_are_throttled_alike(at: Any) -> None:
    email = f"{unique('nobody')}@example.com"
    fail(at(ATTACKER), email, 3)
    assert login(at(ATTACKER), email) == 429
    assert login(at(OWNER), email) == 401


def test_a_success_forgets_only_its_own_address_failures(db: Session, at: Any) -> None:
    user = create_user(db)
    fail(at(OWNER), user.email, 2)
    fail(at(ATTACKER), user.email, 2)
    assert login(at(OWNER), user.email) == 200
    assert failures(db, user.email, OWNER) == 0
    assert failures(db, user.email, ATTACKER) == 2
    # Without the reset, the third of these would be throttled.
    fail(at(OWNER), user.email, 2)
    assert login(at(OWNER), user.email) == 200


def test_failures_older_than_the_window_no_longer_count(db: Session, at: Any) -> None:
    user = create_user(db)
    fail(at(ATTACKER), user.email, 3)
    assert login(at(ATTACKER), user.email) == 429
    window = timedelta(minutes=config.settings.login_failure_window_minutes)
    db.execute(
        update(LoginFailure)
        .where(LoginFailure.email == user.email)
        .values(failed_at=datetime.now(UTC) - window - timedelta(seconds=1))
    )
    assert login(at(ATTACKER), user.email) == 200


def test_the_email_is_matched_without_case(db: Session, at: Any) -> None:
    user = create_user(db)
    fail(at(ATTACKER), user.email.upper(), 3)
    assert login(at(ATTACKER), user.email) == 429


def test_addresses_of_one_ipv6_network_count_together(db: Session, at: Any) -> None:
    user = create_user(db)
    for host in ("1", "2", "ffff:ffff:ffff:ffff"):
        fail(at(f"2001:db8:1:2:{host}" if ":" in host else f"2001:db8:1:2::{host}"), user.email, 1)
    assert login(at("2001:db8:1:2::abcd"), user.email) == 429
    assert login(at("2001:db8:1:3::1"), user.email) == 200


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("testclient", "testclient"),
        ("", "unknown"),
        ("x\x00" + "y" * 100, "x" + "y" * 63),
    ],
)
def test_addresses_are_normalised(address: str, key: str) -> None:
    assert normalized_address(address) == key


def test_a_forwarded_header_is_ignored_unless_a_proxy_is_trusted(db: Session, at: Any) -> None:
    user = create_user(db)
    attacker = at(ATTACKER)
    for index in range(3):
        response = attacker.post(
            "/auth/login",
            json={"email": user.email, "password": "wrong"},
            headers={"X-Forwarded-For": f"10.0.0.{index}"},
        )
        assert response.status_code == 401
    assert failures(db, user.email, ATTACKER) == 3
    assert login(attacker, user.email) == 429


def test_a_trusted_proxy_names_the_client(
    db: Session, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "trusted_proxy_hops", 1)
    user = create_user(db)
    proxy = at("10.0.0.1")
    # What the client wrote comes first; the proxy appended the address it saw.
    response = proxy.post(
        "/auth/login",
        json={"email": user.email, "password": "wrong"},
        headers={"X-Forwarded-For": f"1.2.3.4, {ATTACKER}"},
    )
    assert response.status_code == 401
    assert failures(db, user.email, ATTACKER) == 1


@pytest.mark.parametrize(
    ("client", "forwarded", "hops", "address"),
    [
        (("192.0.2.1", 1), [], 0, "192.0.2.1"),
        (("192.0.2.1", 1), ["10.9.9.9"], 0, "192.0.2.1"),
        (("10.0.0.1", 1), ["1.1.1.1, 192.0.2.1"], 1, "192.0.2.1"),
        (("10.0.0.1", 1), ["1.1.1.1, 192.0.2.1", "10.0.0.2"], 2, "192.0.2.1"),
        (("10.0.0.1", 1), ["192.0.2.1"], 3, "192.0.2.1"),
        (("10.0.0.1", 1), [], 1, "10.0.0.1"),
        # Mangum's ALB handler: the whole header as the client; the balancer's entry is last.
        (("6.6.6.6, 192.0.2.1", 0), [], 0, "192.0.2.1"),
        (None, [], 0, ""),
    ],
)
def test_the_client_address(
    client: tuple[str, int] | None, forwarded: list[str], hops: int, address: str
) -> None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope = {"type": "http", "client": client, "headers": headers}
    assert client_address_for(scope, trusted_proxy_hops=hops) == address


@pytest.mark.usefixtures("api")
@pytest.mark.parametrize("shape", ["rest", "http"])
def test_on_lambda_the_event_names_the_client(db: Session, shape: str) -> None:
    user = create_user(db)
    body = {"email": user.email, "password": "wrong"}
    # A client-written X-Forwarded-For changes nothing; API Gateway's sourceIp counts.
    headers = {"X-Forwarded-For": "10.1.1.1"}
    if shape == "rest":
        event = rest_event("POST", "/auth/login", body=body, headers=headers)
        event["requestContext"]["identity"]["sourceIp"] = ATTACKER
    else:
        event = http_api_event("POST", "/auth/login", body=body, headers=headers)
        event["requestContext"]["http"]["sourceIp"] = ATTACKER
    assert handler(event, LambdaContext())["statusCode"] == 401
    assert failures(db, user.email, ATTACKER) == 1


@pytest.mark.usefixtures("committed")
def test_concurrent_guesses_cannot_pass_the_limit_together() -> None:
    # Real sessions, real commits: every attempt is its own transaction, as on Lambda.
    with config.database.SessionLocal() as session:
        user = create_user(session)
        session.commit()
        email = user.email

    def attempt(_: int) -> int:
        with TestClient(app, base_url="https://testserver", client=(ATTACKER, 1)) as client:
            return login(client, email, "not the password")

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(attempt, range(12)))
    assert statuses == [401] * 3 + [429] * 9
    with config.database.SessionLocal() as session:
        assert failures(session, email) == 3
        # And the failures outlived the requests that answered 401.
        assert session.scalar(select(User.id).where(User.email == email)) is not None
