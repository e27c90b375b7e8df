"""Unit tests of the secrets helpers: password hashing, access tokens, CSRF tokens, key format."""

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from app.internal import api_key_format
from app.internal.security import (
    InvalidToken,
    create_access_token,
    csrf_token_for,
    csrf_token_matches,
    decode_access_token,
    hash_password,
    verify_password,
)
from config import config

ANOTHER_SECRET = "another-secret-key-that-is-long-enough-for-hs256"


def _secret() -> str:
    return config.settings.secret_key.get_secret_value()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(**overrides: object) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": "7",
        "sid": str(uuid.uuid4()),
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _token(*, issued_at: datetime | None = None, expires_at: datetime | None = None) -> str:
    now = datetime.now(UTC)
    return create_access_token(
        user_id=7,
        session_id=uuid.uuid4(),
        issued_at=issued_at or now,
        expires_at=expires_at or now + timedelta(minutes=5),
    )


# Passwords


def test_a_password_hash_is_salted_argon2id_with_the_configured_cost() -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    settings = config.settings
    assert first.startswith("$argon2id$")
    assert f"m={settings.password_hash_memory_kib},t={settings.password_hash_time_cost}," in first
    assert first != second
    assert "s3cret-pass" not in first


def test_the_hash_cost_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.settings, "password_hash_time_cost", 2)
    monkeypatch.setattr(config.settings, "password_hash_memory_kib", 2048)
    assert "m=2048,t=2," in hash_password("s3cret-pass")


def test_verify_password_accepts_only_the_right_password() -> None:
    password_hash = hash_password("s3cret-pass")
    assert verify_password("s3cret-pass", password_hash)
    assert not verify_password("s3cret-Pass", password_hash)
    assert not verify_password("", password_hash)


def test_a_hash_made_with_other_costs_still_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.settings, "password_hash_time_cost", 2)
    old_hash = hash_password("s3cret-pass")
    monkeypatch.undo()
    assert verify_password("s3cret-pass", old_hash)


# Access tokens


def test_an_access_token_round_trips_its_claims() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    session_id = uuid.uuid4()
    token = create_access_token(
        user_id=42,
        session_id=session_id,
        issued_at=now,
        expires_at=now + timedelta(minutes=30),
    )
    claims = decode_access_token(token)
    assert claims.user_id == 42
    assert claims.session_id == session_id
    assert claims.issued_at == now
    assert claims.expires_at == now + timedelta(minutes=30)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_an_expired_token_is_refused() -> None:
    now = datetime.now(UTC)
    token = _token(issued_at=now - timedelta(hours=2), expires_at=now - timedelta(seconds=1))
    with pytest.raises(InvalidToken):
        decode_access_token(token)


# The forger's key length is beside the point.
@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_token_signed_with_another_algorithm_is_refused(algorithm: str) -> None:
    token = jwt.encode(_claims(), _secret(), algorithm=algorithm)
    with pytest.raises(InvalidToken):
        decode_access_token(token)


def test_an_unsigned_alg_none_token_is_refused() -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(InvalidToken):
        decode_access_token(token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    claims = _claims()
    assert decode_access_token(jwt.encode(claims, _secret(), algorithm="HS256")).user_id == 7
    with pytest.raises(InvalidToken):
        decode_access_token(jwt.encode(claims, ANOTHER_SECRET, algorithm="HS256"))


def test_a_tampered_token_is_refused() -> None:
    token = _token()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = _b64({**claims, "sub": "1"})
    with pytest.raises(InvalidToken):
        decode_access_token(f"{header}.{forged_payload}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(InvalidToken):
        decode_access_token(f"{header}.{payload}.{flipped}")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"typ": "refresh"}, id="wrong type"),
        pytest.param({"sub": None}, id="no subject"),
        pytest.param({"sid": None}, id="no session"),
        pytest.param({"exp": None}, id="no expiry"),
        pytest.param({"iat": None}, id="no issued-at"),
        pytest.param({"sub": "not-a-number"}, id="subject not an id"),
        pytest.param({"sid": "not-a-uuid"}, id="session not a uuid"),
    ],
)
def test_a_token_with_wrong_or_missing_claims_is_refused(overrides: dict[str, object]) -> None:
    token = jwt.encode(_claims(**overrides), _secret(), algorithm="HS256")
    with pytest.raises(InvalidToken):
        decode_access_token(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x.y.z"])
def test_garbage_is_not_a_token(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        decode_access_token(garbage)


def test_tokens_stop_verifying_when_the_secret_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    monkeypatch.setattr(config.settings, "secret_key", SecretStr(ANOTHER_SECRET))
    with pytest.raises(InvalidToken):
        decode_access_token(token)


# CSRF tokens


def test_a_csrf_token_is_derived_from_its_session_and_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_id, other_session_id = uuid.uuid4(), uuid.uuid4()
    token = csrf_token_for(session_id)
    assert token == csrf_token_for(session_id)
    assert token != csrf_token_for(other_session_id)
    assert str(session_id) not in token
    assert len(token) >= 43  # a whole SHA-256 MAC
    monkeypatch.setattr(config.settings, "secret_key", SecretStr(ANOTHER_SECRET))
    assert csrf_token_for(session_id) != token


def test_a_csrf_token_matches_only_its_own_session() -> None:
    session_id, other_session_id = uuid.uuid4(), uuid.uuid4()
    token = csrf_token_for(session_id)
    assert csrf_token_matches(session_id, token)
    assert not csrf_token_matches(other_session_id, token)
    assert not csrf_token_matches(session_id, None)
    assert not csrf_token_matches(session_id, "")
    assert not csrf_token_matches(session_id, token[:-1])


# API key format


def test_a_generated_key_has_the_documented_shape() -> None:
    key = api_key_format.generate_api_key()
    assert key.startswith("trk_")
    assert len(key) == 4 + 43 + 6
    assert key[4:].isalnum()
    assert key[4:].isascii()
    assert api_key_format.is_well_formed(key)


def test_generated_keys_differ() -> None:
    keys = {api_key_format.generate_api_key() for _ in range(100)}
    assert len(keys) == 100


def test_the_checksum_refuses_every_single_character_typo() -> None:
    key = api_key_format.generate_api_key()
    prefix_length = len(api_key_format.PREFIX)
    for position in range(prefix_length, len(key)):
        for replacement in api_key_format.ALPHABET:
            if replacement == key[position]:
                continue
            typo = key[:position] + replacement + key[position + 1 :]
            assert not api_key_format.is_well_formed(typo), typo


def test_the_checksum_refuses_swapped_neighbours() -> None:
    key = api_key_format.generate_api_key()
    for position in range(len(api_key_format.PREFIX), len(key) - 1):
        if key[position] == key[position + 1]:
            continue
        swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
        assert not api_key_format.is_well_formed(swapped), swapped


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda key: "", id="empty"),
        pytest.param(lambda key: key[:-1], id="one short"),
        pytest.param(lambda key: key + "0", id="one long"),
        pytest.param(lambda key: "trx_" + key[4:], id="wrong prefix"),
        pytest.param(lambda key: key[4:], id="no prefix"),
        pytest.param(lambda key: key.upper(), id="upper-cased"),
        pytest.param(lambda key: f" {key}", id="leading space"),
        pytest.param(lambda key: f"{key}\n", id="trailing newline"),
        pytest.param(lambda key: key[:10] + "-" + key[11:], id="not base62"),
        pytest.param(lambda key: key[:10] + "é" + key[11:], id="not ascii"),
    ],
)
def test_malformed_keys_are_refused(mangle: Callable[[str], str]) -> None:
    key = api_key_format.generate_api_key()
    assert not api_key_format.is_well_formed(mangle(key))


def test_the_digest_is_the_hex_sha256_of_the_whole_key() -> None:
    key = api_key_format.generate_api_key()
    digest = api_key_format.digest(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert len(digest) == 64
    assert key not in digest
    assert api_key_format.digest(api_key_format.generate_api_key()) != digest


def test_the_display_prefix_is_short_and_starts_the_key() -> None:
    key = api_key_format.generate_api_key()
    prefix = api_key_format.display_prefix(key)
    assert key.startswith(prefix)
    assert prefix.startswith("trk_")
    assert len(prefix) == 12
