"""Standard Webhooks signatures: the secret's format, and the headers that sign one message.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
`v1,` + base64(HMAC-SHA256(key, content)), where the key is the secret after `whsec_`,
base64-decoded. Receivers verify the raw body before parsing it.
"""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105  (a format, not a secret)
SECRET_BYTES = 32


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signed_headers(
    secrets_: Sequence[str], *, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one message, signed by each secret (during a rotation's overlap, the new
    and the old one): `webhook-signature` holds the signatures space-separated, as the
    specification allows, and a receiver accepts the message when one of them verifies."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, message_id=message_id, timestamp=timestamp, body=body)
            for secret in secrets_
        ),
    }
