"""SnapStart's hooks (app/snapstart.py) as functions; tests/entrypoint/test_runtime_client.py
runs them under the runtime interface client's snapshot lifecycle."""

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from app import snapstart
from app.models import Scope
from app.schemas.api_key import ApiKeyCreate
from app.services import api_keys
from app.services.access import Caller
from config import config
from tests.helpers.factories import create_user


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(config.settings, "api_key_cache_seconds", 10)
    api_keys.forget_verified_keys()
    yield
    api_keys.forget_verified_keys()


def test_after_a_restore_the_random_state_is_new() -> None:
    random.seed(25)
    snapshot_state = random.getstate()
    snapshotted = [random.random() for _ in range(4)]
    random.setstate(snapshot_state)
    snapstart.after_restore()
    assert [random.random() for _ in range(4)] != snapshotted


@pytest.mark.usefixtures("cache")
def test_after_a_restore_no_api_key_is_trusted_without_a_query(db: Session) -> None:
    _, plaintext = api_keys.create_api_key(
        db,
        caller=Caller(user=create_user(db)),
        key_in=ApiKeyCreate(name="k", scopes=[Scope.INGEST]),
    )
    api_keys.authenticate_api_key(db, key=plaintext)
    assert api_keys.recently_verified(plaintext) is not None
    snapstart.after_restore()
    assert api_keys.recently_verified(plaintext) is None


def test_before_the_snapshot_the_pooled_connections_are_closed() -> None:
    with config.database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    pool = config.database.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() >= 1
    snapstart.before_snapshot()
    pool = config.database.engine.pool  # disposing replaces the pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 0
    # The engine connects again when next used.
    with config.database.engine.connect() as connection:
        assert connection.scalar(text("SELECT 1")) == 1
