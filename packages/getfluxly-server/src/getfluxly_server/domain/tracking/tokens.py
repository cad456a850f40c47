"""Signed tokens of tracking and unsubscribe links.

A token is ``<payload>.<mac>``, both base64url without padding: the payload is the JSON
array ``[key id, kind, *fields]`` (kind ``o`` open, ``c`` click, ``u`` unsubscribe, ``p``
preferences; fields such as the message id and a click's link), the mac the first 16 bytes
of HMAC-SHA256 over the payload's bytes with the signing key of that key id. Signing keys
are derived from the server's encryption keys (``GETFLUXLY_ENCRYPTION_KEYS``, see
:meth:`~getfluxly_server.crypto.Keyring.derived_keys`): links sent before a key rotation
verify while the old key stays listed. Nothing in a token is secret (the message id is
already in the mail's headers); what the mac gives is that no one can make or change one,
so a click redirects only to a link GetFluxly put in the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

import orjson

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.errors import DomainError

#: What the signing keys are derived for (changing it voids every link ever sent).
PURPOSE = "getfluxly tracking links v1"
MAC_BYTES = 16
#: Longer tokens are refused unread (a click's link is inside: 8 KB of link is plenty).
MAX_TOKEN = 12_000


class InvalidToken(DomainError):  # noqa: N818 - reads as what happened
    """Not a token GetFluxly signed (changed, cut short, or made up): 404 ``not_found``,
    as for a link that never existed."""

    def __init__(self) -> None:
        super().__init__(
            "not_found",
            "This link is not valid: it was changed or cut short. Open the link from the "
            "email again, as it was sent.",
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs with the primary key; verifies with any key the keyring still lists."""

    def __init__(self, keyring: Keyring) -> None:
        self._keys = keyring.derived_keys(PURPOSE)
        self._primary = keyring.primary

    def __repr__(self) -> str:  # key material never leaves this object
        return f"Signer(primary={self._primary!r})"

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, kind: str, *fields: str) -> str:
        payload = orjson.dumps([self._primary, kind, *fields])
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[self._primary], payload))}"

    def verify(self, kind: str, token: str, arity: int) -> Sequence[str]:
        """The ``arity`` fields of a ``kind`` token this server signed; :class:`InvalidToken`
        for anything else (never says which part was wrong)."""
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise InvalidToken()
        encoded, mac = token.split(".")
        try:
            payload, given = _unb64(encoded), _unb64(mac)
            kid, found_kind, *fields = orjson.loads(payload)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidToken() from None
        if _b64(payload) != encoded or _b64(given) != mac:
            # Base64 leaves spare bits in a last character: a token differing only there
            # decodes the same. Only the one spelling this server writes is taken.
            raise InvalidToken()
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None or not hmac.compare_digest(self._mac(key, payload), given):
            raise InvalidToken()
        if found_kind != kind or len(fields) != arity:
            raise InvalidToken()  # signed, but for another use: not this link
        strings = [field for field in fields if isinstance(field, str)]
        if len(strings) != arity:
            raise InvalidToken()
        return strings
