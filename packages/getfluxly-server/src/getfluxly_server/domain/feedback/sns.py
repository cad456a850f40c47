"""Amazon SNS message signatures (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html),
and the confirmation of a subscription once its message verified.

An SNS message is signed with SNS's RSA key: ``SignatureVersion`` ``1`` is SHA1withRSA, ``2``
SHA256withRSA, over "name\\nvalue\\n" lines of the message's fields in a fixed order. The
certificate comes from ``SigningCertURL``, which is believed only over HTTPS from a host that
matches :attr:`SnsPolicy.cert_hosts` (``sns.<region>.amazonaws.com``): a forged message naming
its own certificate is refused before anything is fetched. Certificates are cached (by URL)
for an hour.

A ``SubscriptionConfirmation``'s ``SubscribeURL`` is fetched only after the message verified,
and only over HTTPS on a host matching :attr:`SnsPolicy.subscribe_hosts`: never a URL an
unverified post names (that would let anyone make the server request any address).
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from getfluxly_server.domain.feedback.signatures import Refused

#: The fields signed, in order, by message type (those absent are left out: a Notification's
#: Subject is optional).
SIGNED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
#: The most a certificate download may be (a PEM certificate is 2-3 KB).
_CERT_MAX = 64 * 1024
_CACHE_SECONDS = 3600.0
_CACHE_SIZE = 64


@dataclass
class SnsPolicy:
    """Where SNS certificates and subscription confirmations may be fetched from (regular
    expressions matched whole against ``host`` or ``host:port``), the CA bundle those HTTPS
    fetches trust (None: the system's) and their timeout."""

    cert_hosts: str
    subscribe_hosts: str
    ca_file: Path | None = None
    timeout: float = 10.0
    _cache: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = field(
        default_factory=OrderedDict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allows(self, url: str, pattern: str) -> bool:
        """Whether ``url`` is HTTPS on a host ``pattern`` matches (no user info)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            return False
        host = parts.hostname if port is None else f"{parts.hostname}:{port}"
        return re.fullmatch(pattern, host) is not None

    def _get(self, url: str) -> httpx.Response:
        verify: Any = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
        with httpx.Client(verify=verify, timeout=self.timeout, follow_redirects=False) as client:
            return client.get(url)

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at ``url`` (allowed hosts only; cached)."""
        if not self.allows(url, self.cert_hosts) or not urlsplit(url).path.endswith(".pem"):
            raise Refused(
                "SigningCertURL must be an https:// .pem URL on Amazon SNS's own host "
                "(sns.<region>.amazonaws.com)"
            )
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] > time.monotonic():
                self._cache.move_to_end(url)
                return cached[1]
        try:
            answer = self._get(url)
        except httpx.HTTPError as exc:
            raise Refused(
                f"the signing certificate could not be fetched ({type(exc).__name__})"
            ) from None
        if answer.status_code != 200 or len(answer.content) > _CERT_MAX:
            raise Refused(
                f"the signing certificate could not be fetched (HTTP {answer.status_code})"
            )
        try:
            certificate = x509.load_pem_x509_certificate(answer.content)
        except ValueError:
            raise Refused("SigningCertURL does not serve a PEM certificate") from None
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Refused("the signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused("the signing certificate does not hold an RSA key")
        with self._lock:
            self._cache[url] = (time.monotonic() + _CACHE_SECONDS, key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return key

    def confirm(self, url: str) -> str:
        """Confirm a subscription (GET its SubscribeURL, allowed hosts only); what happened."""
        if not self.allows(url, self.subscribe_hosts):
            return "SubscribeURL is not on Amazon SNS's host: not fetched"
        try:
            answer = self._get(url)
        except httpx.HTTPError as exc:
            return f"confirmation failed ({type(exc).__name__})"
        if answer.status_code != 200:
            return f"confirmation failed (HTTP {answer.status_code})"
        return "subscription confirmed"


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``message`` (its type's fields, in order, those present)."""
    fields = SIGNED_FIELDS.get(str(message.get("Type")), ())
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Refused(f"{name} must be a string")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def verify(message: Mapping[str, Any], policy: SnsPolicy) -> None:
    """Check ``message``'s signature (versions 1 and 2) with its certificate; Refused if it
    does not verify. The caller checks the type, topic and timestamp."""
    version = message.get("SignatureVersion")
    algorithm = _HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise Refused("SignatureVersion must be 1 or 2")
    signature_text = message.get("Signature")
    cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
    if not isinstance(signature_text, str) or not isinstance(cert_url, str):
        raise Refused("Signature and SigningCertURL are required")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("Signature is not base64") from None
    key = policy.public_key(cert_url)
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Refused("Signature does not verify with the SNS signing certificate") from None
