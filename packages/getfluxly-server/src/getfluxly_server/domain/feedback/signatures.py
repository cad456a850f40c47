"""The checks relays' webhook posts are verified with, on the raw bytes, before anything in
them is believed: HMAC in the Standard Webhooks (and Svix) scheme, plain HMAC, HTTP Basic or
Bearer credentials, ECDSA P-256 over SHA-256, and the replay window on a signed timestamp.

Every check compares in constant time, and an empty secret never verifies anything (an HMAC
keyed with nothing is a checksum anyone can compute).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from getfluxly_server.domain.errors import DomainError

#: How far a signed timestamp may be from the server's clock, either way (engine spec 7).
REPLAY_WINDOW = timedelta(minutes=5)
#: The prefix of Standard Webhooks (and Svix) secrets.
WHSEC = "whsec_"


class Refused(DomainError):  # noqa: N818 - reads as what happened
    """A post that does not verify: 401 ``unauthenticated``, saying what failed (never
    anything of the secret)."""

    def __init__(self, detail: str) -> None:
        super().__init__("unauthenticated", detail)


@dataclass(frozen=True)
class Incoming:
    """A webhook post as received: header names lower-cased, the body's exact bytes."""

    headers: Mapping[str, str]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str:
        """The header's value, stripped ("" when absent)."""
        return self.headers.get(name.lower(), "").strip()


def body_digest(body: bytes) -> str:
    """The delivery id of a post whose relay sends none: what identifies a byte-for-byte
    repeat of it."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def check_timestamp(value: str, now: datetime, header: str) -> None:
    """A signed Unix timestamp (seconds) within :data:`REPLAY_WINDOW` of ``now``."""
    try:
        sent = int(value.strip())
    except ValueError:
        raise Refused(f"{header} must be a Unix timestamp in seconds") from None
    if abs(now.timestamp() - sent) > REPLAY_WINDOW.total_seconds():
        raise Refused(
            f"{header} is more than {int(REPLAY_WINDOW.total_seconds() // 60)} minutes from "
            "the server's clock: a replayed or delayed post (check the sender's clock)"
        )


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def standard_webhook_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_<base64>`` secret (None when it is not one, or empty)."""
    if not secret.startswith(WHSEC):
        return None
    key = _b64decode(secret[len(WHSEC) :])
    return key or None


def verify_standard(
    incoming: Incoming, secrets: Iterable[str], now: datetime, *, prefix: str = "webhook"
) -> str:
    """The Standard Webhooks scheme (``prefix`` ``webhook``; Svix, as Resend sends it, is
    the same with ``svix``): ``<prefix>-signature`` lists ``v1,<base64 HMAC-SHA256 of
    "id.timestamp.body">`` entries, space-separated; any of them made with any of
    ``secrets`` verifies. Returns the ``<prefix>-id`` (the delivery id)."""
    message_id = incoming.header(f"{prefix}-id")
    timestamp = incoming.header(f"{prefix}-timestamp")
    signatures = incoming.header(f"{prefix}-signature")
    if not message_id or not timestamp or not signatures:
        raise Refused(
            f"The {prefix}-id, {prefix}-timestamp and {prefix}-signature headers are required"
        )
    check_timestamp(timestamp, now, f"{prefix}-timestamp")
    offered = [
        decoded
        for entry in signatures.split()
        if entry.startswith("v1,") and (decoded := _b64decode(entry[3:])) is not None
    ]
    signed = f"{message_id}.{timestamp}.".encode() + incoming.body
    for secret in secrets:
        key = standard_webhook_key(secret)
        if key is None:
            continue
        expected = hmac_sha256(key, signed)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return message_id
    raise Refused(f"{prefix}-signature does not match this project's webhook secret")


def verify_hex_hmac(message: bytes, signature: str, secrets: Iterable[str], what: str) -> None:
    """``signature`` is the hex HMAC-SHA256 of ``message`` under one of ``secrets``."""
    offered = signature.strip().lower().encode()
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, offered):
            return
    raise Refused(f"{what} does not match this project's webhook signing key")


def verify_credentials(incoming: Incoming, secrets: Iterable[str]) -> None:
    """HTTP Basic (any user name, the secret as password: as relays put credentials in the
    webhook URL) or ``Authorization: Bearer <secret>``."""
    scheme, _, value = incoming.header("authorization").partition(" ")
    offered: bytes | None = None
    if scheme.lower() == "bearer":
        offered = value.strip().encode()
    elif scheme.lower() == "basic":
        decoded = _b64decode(value.strip())
        if decoded is not None and b":" in decoded:
            offered = decoded.split(b":", 1)[1]
    if not offered:
        raise Refused(
            "Send the webhook secret as HTTP Basic credentials (any user name, the secret as "
            "password: https://getfluxly:<secret>@host/...) or as 'Authorization: Bearer "
            "<secret>'"
        )
    for secret in secrets:
        if secret and hmac.compare_digest(secret.encode(), offered):
            return
    raise Refused("The credentials do not match this project's webhook secret")


def load_p256_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key given as PEM or as base64 DER (how SendGrid shows it); ValueError
    saying what is wrong otherwise."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            der = _b64decode("".join(text.split()))
            if der is None:
                raise ValueError("not base64")
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        raise ValueError("is not a public key (PEM, or base64 DER as SendGrid shows it)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("must be an ECDSA P-256 public key")
    return key


def verify_ecdsa(message: bytes, signature_b64: str, public_keys: Iterable[str], what: str) -> None:
    """``signature_b64`` (base64 DER) is an ECDSA P-256 / SHA-256 signature of ``message`` by
    one of ``public_keys``."""
    signature = _b64decode(signature_b64.strip())
    if not signature:
        raise Refused(f"{what} is not a base64 signature")
    for text in public_keys:
        if not text:
            continue
        try:
            load_p256_public_key(text).verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            continue
        return
    raise Refused(f"{what} does not verify with this project's public key")
