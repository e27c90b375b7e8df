"""Webhook signing secrets encrypted at rest.

Fernet (AES-128-CBC with an HMAC-SHA256 over it: a token that was altered, or made under
another key, does not decrypt) under keys derived by HKDF-SHA256 from the WEBHOOK_SECRET_KEYS
setting. The first key encrypts; every key decrypts, so a new key is put first, every secret
is moved to it (the `reencrypt_webhook_secrets` task), and only then is the old key dropped.

`cryptography` is imported when a secret is first encrypted or decrypted, not with the app.
"""

import base64
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# Binds the derived keys to this one use: the same setting can serve nothing else.
KEY_PURPOSE = b"tracker webhook signing secrets v1"


class UnreadableSecret(Exception):
    """A stored secret does not decrypt under any configured key."""


def _fernet(key: str) -> "Fernet":
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE).derive(
        key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        from cryptography.fernet import MultiFernet

        if not keys:
            raise ValueError("at least one key is needed")
        self._first = _fernet(keys[0])
        self._all = MultiFernet([self._first, *(_fernet(key) for key in keys[1:])])

    def encrypt(self, secret: str) -> str:
        return self._all.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._all.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise UnreadableSecret(
                "a signing secret does not decrypt under any key of WEBHOOK_SECRET_KEYS"
            ) from None

    def under_first_key(self, token: str) -> bool:
        from cryptography.fernet import InvalidToken

        try:
            self._first.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True


@lru_cache(maxsize=4)
def secret_box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)
