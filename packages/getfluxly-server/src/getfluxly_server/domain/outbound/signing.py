"""Standard Webhooks signing (https://www.standardwebhooks.com): the secrets and the headers
every outbound delivery carries.

A secret is ``whsec_`` and the base64 of 24 random bytes; the key is those bytes. A message
is signed as ``v1,`` and the base64 of HMAC-SHA256(key, ``"{id}.{timestamp}.{body}"``),
where ``id`` is the delivery's id (``webhook-id``, the same on every attempt, for the
receiver's de-duplication) and ``timestamp`` whole seconds since the epoch
(``webhook-timestamp``, fresh on every attempt, for the receiver's replay window).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
_SECRET_BYTES = 24


def new_secret() -> str:
    """A new signing secret (``whsec_<base64>``)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def key_of(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
