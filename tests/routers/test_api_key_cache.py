"""The API key cache through the whole stack (the app's own sessions, real commits): a key
verified a moment ago needs no query; a revocation made by this process refuses the key at once,
one made elsewhere (another instance) once API_KEY_CACHE_SECONDS have passed."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.internal import api_key_format
from app.main import app
from app.models import ApiKey, User
from app.services import api_keys
from config import config
from tests.helpers.capture import captured_statements
from tests.helpers.factories import create_api_key, create_user, log_in

pytestmark = pytest.mark.usefixtures("committed")

BOUND_S = 10


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(config.settings, "api_key_cache_seconds", BOUND_S)
    api_keys.forget_verified_keys()
    yield
    api_keys.forget_verified_keys()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


def committed_key() -> tuple[User, int, str]:
    """A client user's key; answers the user, the key's id and its plaintext."""
    with config.database.SessionLocal() as session:
        user = create_user(session)
        plaintext = create_api_key(session, user)
        key_id = session.scalars(
            select(ApiKey.id).where(ApiKey.digest == api_key_format.digest(plaintext))
        ).one()
        session.commit()
    return user, key_id, plaintext


def read_jobs(client: TestClient, key: str) -> int:
    return client.get("/jobs", params={"limit": 1}, headers={"X-API-Key": key}).status_code


@pytest.mark.usefixtures("cache")
def test_a_key_verified_a_moment_ago_costs_no_query(client: TestClient) -> None:
    _, _, key = committed_key()
    assert read_jobs(client, key) == 200
    with captured_statements() as statements:
        assert read_jobs(client, key) == 200
    assert statements
    assert not [statement for statement in statements if "api_keys" in statement]


@pytest.mark.usefixtures("cache")
def test_a_refused_request_leaves_the_cached_key_usable(client: TestClient) -> None:
    _, _, key = committed_key()
    # The first request verifies the key, then is refused: its transaction rolls back.
    missing = client.get("/jobs/999999999", headers={"X-API-Key": key})
    assert missing.status_code == 404
    with captured_statements() as statements:
        assert read_jobs(client, key) == 200
    assert not [statement for statement in statements if "api_keys" in statement]


@pytest.mark.usefixtures("cache")
def test_a_key_revoked_elsewhere_is_refused_once_the_bound_has_passed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key_id, key = committed_key()
    assert read_jobs(client, key) == 200
    with config.database.SessionLocal() as elsewhere:
        elsewhere.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC))
        )
        elsewhere.commit()
    assert read_jobs(client, key) == 200  # trusted, within the bound
    later = time.monotonic() + BOUND_S + 0.1
    monkeypatch.setattr(api_keys, "time", SimpleNamespace(monotonic=lambda: later))
    assert read_jobs(client, key) == 401


@pytest.mark.usefixtures("cache")
def test_a_key_revoked_through_the_api_is_refused_at_once(client: TestClient) -> None:
    user, key_id, key = committed_key()
    assert read_jobs(client, key) == 200
    login = log_in(client, user)
    assert client.delete(f"/api-keys/{key_id}", headers=login.headers).status_code == 204
    assert read_jobs(client, key) == 401
