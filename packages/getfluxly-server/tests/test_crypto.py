"""The secrets keyring: AES-GCM with key ids, rotation, and binding to the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from getfluxly_server.crypto import Keyring, KeyringError


def test_round_trip_and_fresh_nonces() -> None:
    ring = Keyring.parse(Keyring.generate("a"))
    first = ring.encrypt("s3cret", context="prv_1")
    second = ring.encrypt("s3cret", context="prv_1")
    assert first != second  # a fresh nonce each time
    assert "s3cret" not in first
    assert ring.decrypt(first, context="prv_1") == "s3cret"
    assert first.startswith("gfx1.a.")


def test_ciphertext_is_bound_to_its_row() -> None:
    ring = Keyring.parse(Keyring.generate("a"))
    token = ring.encrypt("s3cret", context="prv_1")
    with pytest.raises(KeyringError, match="authenticate"):
        ring.decrypt(token, context="prv_2")


def test_rotation_keeps_old_secrets_readable() -> None:
    old, new = Keyring.generate("old"), Keyring.generate("new")
    token = Keyring.parse(old).encrypt("s3cret", context="x")
    rotated = Keyring.parse(f"{new},{old}")
    assert rotated.primary == "new"
    assert rotated.decrypt(token, context="x") == "s3cret"
    assert rotated.needs_rotation(token)
    assert not rotated.needs_rotation(rotated.encrypt("s3cret", context="x"))
    with pytest.raises(KeyringError, match="no longer lists"):
        Keyring.parse(new).decrypt(token, context="x")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nokey",
        "a:not-base64!",
        "a:AAAA",
        "bad id:" + "A" * 44,
        "a:" + "A" * 44 + ",a:" + "A" * 44,
    ],
)
def test_malformed_keyrings(text: str) -> None:
    with pytest.raises(KeyringError):
        Keyring.parse(text)


def test_tampered_ciphertext() -> None:
    ring = Keyring.parse(Keyring.generate("a"))
    token = ring.encrypt("s3cret", context="x")
    prefix, kid, nonce, sealed = token.split(".")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (f"{prefix}.{kid}.{nonce}.{flipped}", "garbage", "gfx2.a.b.c"):
        with pytest.raises(KeyringError):
            ring.decrypt(bad, context="x")


def test_repr_shows_no_key_material() -> None:
    text = Keyring.generate("a")
    assert text.split(":")[1] not in repr(Keyring.parse(text))


def test_development_key_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption.key"
    first = Keyring.for_development(path)
    token = first.encrypt("x", context="c")
    assert Keyring.for_development(path).decrypt(token, context="c") == "x"
    assert path.stat().st_mode & 0o077 == 0
