"""The per-process memory of verified API keys: trusted for at most API_KEY_CACHE_SECONDS, never
past a key's expiry, and forgotten at once by changes made in this process."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import ApiKey, Scope
from app.schemas.api_key import ApiKeyCreate
from app.services import api_keys
from app.services.access import Caller
from config import config
from tests.helpers.factories import create_user

BOUND_S = 10


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(config.settings, "api_key_cache_seconds", BOUND_S)
    api_keys.forget_verified_keys()
    yield
    api_keys.forget_verified_keys()


def new_key(db: Session, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    user = create_user(db)
    return api_keys.create_api_key(
        db,
        caller=Caller(user=user),
        key_in=ApiKeyCreate(name="k", scopes=[Scope.INGEST], expires_at=expires_at),
    )


@pytest.mark.usefixtures("cache")
def test_a_key_revoked_elsewhere_is_refused_once_the_bound_has_passed(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, plaintext = new_key(db)
    assert api_keys.recently_verified(plaintext) is None
    api_keys.authenticate_api_key(db, key=plaintext)
    assert api_keys.recently_verified(plaintext) is not None
    # Another process revokes it: this one still trusts it, within the bound only.
    db.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=datetime.now(UTC)))
    assert api_keys.recently_verified(plaintext) is not None
    later = time.monotonic() + BOUND_S + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert api_keys.recently_verified(plaintext) is None


@pytest.mark.usefixtures("cache")
def test_a_revocation_in_this_process_takes_effect_at_once(db: Session) -> None:
    key, plaintext = new_key(db)
    owner, _ = api_keys.authenticate_api_key(db, key=plaintext)
    api_keys.revoke_api_key(db, caller=Caller(user=owner), api_key_id=key.id)
    assert api_keys.recently_verified(plaintext) is None


@pytest.mark.usefixtures("cache")
def test_a_remembered_key_is_never_trusted_past_its_expiry(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plaintext = new_key(db, expires_at=datetime.now(UTC) + timedelta(hours=1))
    [(user, key)] = [api_keys.authenticate_api_key(db, key=plaintext)]
    remembered = api_keys.recently_verified(plaintext)
    assert remembered is not None
    assert (remembered[0].id, remembered[1].id) == (user.id, key.id)

    class TwoHoursLater(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> "TwoHoursLater":
            return cls.fromtimestamp(time.time() + 7200, tz)

    monkeypatch.setattr(api_keys, "datetime", TwoHoursLater)
    assert api_keys.recently_verified(plaintext) is None


def test_the_bound_is_at_most_thirty_seconds() -> None:
    with pytest.raises(ValueError, match="less than or equal to 30"):
        type(config.settings)(api_key_cache_seconds=31)
