"""Secrets at rest: AES-256-GCM with key ids, so keys rotate without re-entering secrets.

A ciphertext is ``gfx1.<key id>.<nonce>.<ciphertext+tag>`` (base64url). New secrets are
encrypted with the first (primary) key; any key still listed decrypts what it encrypted, so
rotation is: put a new key first, restart, re-encrypt (``getfluxly keys rotate``), then drop
the old key. Each ciphertext is bound to its row by associated data (e.g. the provider id),
so a ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "gfx1"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(Exception):
    """A key or ciphertext is malformed, unknown, or does not authenticate."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keyring:
    """Named AES-256 keys; the first is the one new secrets are encrypted with."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("at least one key is needed")
        self._keys = {kid: AESGCM(key) for kid, key in keys}
        self._material = dict(keys)
        self.primary = keys[0][0]

    def __repr__(self) -> str:  # key material never leaves this object
        return f"Keyring(primary={self.primary!r}, ids={list(self._keys)!r})"

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """``kid:base64key[,kid:base64key...]``, primary first; each key 32 bytes."""
        keys = []
        for item in (part.strip() for part in text.split(",")):
            kid, sep, encoded = item.partition(":")
            if not sep or not _KID.match(kid):
                raise KeyringError(
                    "each key is written id:base64key (id of letters, digits, - and _)"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise KeyringError(f"key {kid!r} must be 32 bytes, base64-encoded")
            keys.append((kid, key))
        if len({kid for kid, _ in keys}) != len(keys):
            raise KeyringError("key ids must be unique")
        return cls(keys)

    @staticmethod
    def generate(kid: str | None = None) -> str:
        """A new key in the ``kid:base64key`` form of GETFLUXLY_ENCRYPTION_KEYS."""
        kid = kid or f"k{secrets.token_hex(4)}"
        return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    @classmethod
    def for_development(cls, path: Path) -> Keyring:
        """Dev mode: a key kept in the data dir (created on first use, readable by us only)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(cls.generate("dev") + "\n")
        return cls.parse(path.read_text().strip())

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._keys[self.primary].encrypt(nonce, plaintext.encode(), context.encode())
        return ".".join((PREFIX, self.primary, _b64(nonce), _b64(sealed)))

    def decrypt(self, token: str, *, context: str) -> str:
        try:
            prefix, kid, nonce, sealed = token.split(".")
        except ValueError:
            raise KeyringError("not a GetFluxly ciphertext") from None
        if prefix != PREFIX:
            raise KeyringError("not a GetFluxly ciphertext")
        if kid not in self._keys:
            raise KeyringError(
                f"ciphertext was made with key {kid!r}, which GETFLUXLY_ENCRYPTION_KEYS no "
                "longer lists; add it back (after the primary) to read it"
            )
        try:
            return self._keys[kid].decrypt(_unb64(nonce), _unb64(sealed), context.encode()).decode()
        except (InvalidTag, ValueError):
            raise KeyringError("ciphertext does not authenticate (wrong key or row)") from None

    def derived_keys(self, purpose: str) -> dict[str, bytes]:
        """A 32-byte key per key id for ``purpose`` (HKDF-SHA256 of each key, the purpose as
        its info): keys for other uses (signing tracking links) that never equal the
        encryption keys, rotating with them. The primary's is under :attr:`primary`."""
        return {
            kid: HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()
            ).derive(key)
            for kid, key in self._material.items()
        }

    def needs_rotation(self, token: str) -> bool:
        return token.split(".")[1:2] != [self.primary]
