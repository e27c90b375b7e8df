"""Password hashing (Argon2id via pwdlib), session tokens (PyJWT, HS256 only) and CSRF tokens."""

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from config import config

JWT_ALGORITHM = "HS256"
TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)


@cache
def _password_hash(time_cost: int, memory_kib: int) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))


def _hasher() -> PasswordHash:
    settings = config.settings
    return _password_hash(settings.password_hash_time_cost, settings.password_hash_memory_kib)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher().verify(password, password_hash)


@cache
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    return _password_hash(time_cost, memory_kib).hash("not-a-real-password")


def spend_password_work(password: str) -> None:
    """Verify against a throwaway hash, so an unknown email costs what a wrong password does."""
    settings = config.settings
    dummy = _dummy_hash(settings.password_hash_time_cost, settings.password_hash_memory_kib)
    _hasher().verify(password, dummy)


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    session_id: uuid.UUID
    issued_at: datetime
    expires_at: datetime


class InvalidToken(Exception):
    pass


def create_access_token(
    *, user_id: int, session_id: uuid.UUID, issued_at: datetime, expires_at: datetime
) -> str:
    payload = {
        "sub": str(user_id),
        "sid": str(session_id),
        "typ": TOKEN_TYPE,
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return jwt.encode(payload, _secret(), algorithm=JWT_ALGORITHM)


def decode_access_token(token: str) -> TokenClaims:
    """The token's claims; raises InvalidToken for anything expired, tampered or unexpected."""
    try:
        payload = jwt.decode(
            token,
            _secret(),
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "sid", "typ", "iat", "exp"]},
        )
        if payload["typ"] != TOKEN_TYPE:
            raise InvalidToken("wrong token type")
        return TokenClaims(
            user_id=int(payload["sub"]),
            session_id=uuid.UUID(payload["sid"]),
            issued_at=datetime.fromtimestamp(payload["iat"], tz=UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], tz=UTC),
        )
    except (jwt.InvalidTokenError, ValueError, TypeError) as error:
        raise InvalidToken(str(error)) from error


def csrf_token_for(session_id: uuid.UUID) -> str:
    """The CSRF token of a session: derived from its id with the secret key, so never stored."""
    digest = hmac.new(_secret().encode(), f"csrf:{session_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_token_matches(session_id: uuid.UUID, candidate: str | None) -> bool:
    return candidate is not None and hmac.compare_digest(csrf_token_for(session_id), candidate)


def _secret() -> str:
    secret = config.settings.secret_key
    assert secret is not None  # production settings refuse to load without one
    return secret.get_secret_value()
