"""DKIM signing: every signature is checked by dkimpy, an independent verifier.

The public keys reach dkimpy through a ``dnsfunc`` that answers the TXT lookup with a record
built here from the key itself (not with ``DKIMSigner.dns_record()``, which is tested against
it), so a mistake in the signer cannot be mirrored by its own record.
"""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]  # dkimpy, the independent verifier
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail, FluxMailException
from fluxmail.dkim import DEFAULT_HEADERS, DKIMSigner, _body_relaxed, _header_relaxed
from fluxmail.protocol.commands import Envelope

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

CANONICALIZATIONS = ["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"]
DOMAIN, SELECTOR = "example.com", "sel"
#: Everything the default list signs, plus the extra headers some test messages carry.
HEADERS = (*DEFAULT_HEADERS, "x-campaign", "a", "b")
NOW = 1_790_000_000

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81"
    b"\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)

#: RFC 6376 3.4.6's example, after a From (DKIM requires one). The RFC writes "B : Y"; dkimpy
#: cannot parse a space before the colon, so that form is checked without dkimpy
#: (test_rfc6376_example_canonical_forms).
RFC_EXAMPLE = b"From: a@example.com\r\nA: X\r\nB: Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"


# -- keys, DNS and messages ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(params=["rsa", "ed25519"])
def key(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> PrivateKey:
    return rsa_key if request.param == "rsa" else ed_key


def pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def txt_record(key: PrivateKey) -> bytes:
    """``v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>`` or ``k=ed25519; p=<raw 32 bytes>``."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        kind = "rsa"
        raw = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        kind = "ed25519"
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k={kind}; p={base64.b64encode(raw).decode()}".encode()


def verifies(message: bytes, key: PrivateKey) -> bool:
    record = txt_record(key)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def create(**kwargs: object) -> bytes:
    """The bytes FluxMail would send for ``create(**kwargs)``."""
    mailer = FluxMail("smtp", "smtp.example.com", sender="a@example.com")
    draft = mailer.create(**kwargs)._draft  # type: ignore[arg-type]
    assert draft is not None
    return draft.as_bytes()


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("files")
    report = folder / "report.pdf"
    report.write_bytes(b"%PDF-1.4 fake but binary \x00\xff\r\n.\r\n" * 50)
    notes = folder / "notes.txt"
    notes.write_text("line one\nline two\n")
    logo = folder / "logo.png"
    logo.write_bytes(PNG)
    to = ["b@example.com"]
    return {
        "plain": create(subject="Hello", recipients=to, body="Hi there\nSecond line"),
        "unicode": create(
            subject="Grüße aus Köln ☃, with a subject long enough to be folded by the policy",
            recipients=["Zoë Müller <zoe@example.com>"],
            cc=["c@example.com"],
            reply_to="Åsa <asa@example.com>",
            body="Schöne Grüße, ça va ?\n" * 40,
        ),
        "utf8_headers": create(  # a non-ASCII local part: SMTPUTF8, raw UTF-8 headers
            subject="Grüße", recipients=["josé@example.com"], body="¡Hola!\n"
        ),
        "multipart": create(
            subject="Report",
            recipients=to,
            body='<p>See <img src="cid:logo"> and the report.</p>',
            html_body=True,
            plain_body="See the report.",
            attachments=[str(report), str(notes)],
            inline_images={"logo": str(logo)},
            unsubscribe_url="https://example.com/unsubscribe?u=42",
            in_reply_to="<parent@example.com>",
            references=[f"<ref{i}.{'x' * 20}@example.com>" for i in range(8)],
            priority="high",
            headers={"X-Campaign": " ".join(["spring"] * 30)},
        ),
        "trailing_blank_lines": create(subject="Blank", recipients=to, body="Hi\n\n\n\n"),
        "empty_body": create(subject="Empty", recipients=to, body=""),
        "trailing_whitespace": create(
            subject="Spaces", recipients=to, body="spaces   \n\ttab\t \n  \nend  "
        ),
        "dot_lines": create(subject="Dots", recipients=to, body=".hidden\n..two\n.\nend"),
        "rfc6376_example": RFC_EXAMPLE,
        "no_final_newline": b"From: a@example.com\r\nSubject: x\r\n\r\nno newline at the end",
        "bare_lf": create(subject="LF", recipients=to, body="one\ntwo\n").replace(b"\r\n", b"\n"),
        "headers_only": b"From: a@example.com\r\nSubject: nothing else\r\n",
    }


def signer(key: PrivateKey | bytes | str, **options: object) -> DKIMSigner:
    options.setdefault("headers", HEADERS)
    return DKIMSigner(DOMAIN, SELECTOR, key, **options)  # type: ignore[arg-type]


def tags(signed: bytes) -> dict[str, str]:
    """The tags of the DKIM-Signature header on top of ``signed``, whitespace removed."""
    header = signed.split(b"\r\n\r\n")[0].decode()
    first = header.split("\r\n")[0]
    assert first.startswith("DKIM-Signature: ")
    lines = [first]
    for line in header.split("\r\n")[1:]:
        if not line.startswith((" ", "\t")):
            break
        lines.append(line)
    value = "".join(lines).removeprefix("DKIM-Signature:")
    pairs = [item.split("=", 1) for item in value.split(";")]
    return {name.strip(): "".join(tag.split()) for name, tag in pairs}


def signature_lines(signed: bytes) -> list[bytes]:
    lines = signed.split(b"\r\n")
    end = next(i for i, line in enumerate(lines[1:], 1) if not line.startswith(b" "))
    return lines[:end]


# -- signatures verify -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "unicode",
        "utf8_headers",
        "multipart",
        "trailing_blank_lines",
        "empty_body",
        "trailing_whitespace",
        "dot_lines",
        "rfc6376_example",
        "no_final_newline",
        "bare_lf",
        "headers_only",
    ],
)
@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_signature_verifies(
    key: PrivateKey, messages: dict[str, bytes], name: str, canonicalization: str
) -> None:
    message = messages[name]
    signed = signer(key, canonicalization=canonicalization).sign(message)
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert verifies(signed, key)


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_oversigned_and_identity_signatures_verify(
    key: PrivateKey, messages: dict[str, bytes], canonicalization: str
) -> None:
    for message in messages.values():
        dkim_signer = signer(
            key,
            canonicalization=canonicalization,
            oversign=True,
            identity="news;letter=1@mail.example.com",
            expires_in=3600,
        )
        assert verifies(dkim_signer.sign(message), key)


def test_every_key_form_signs(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    for key in (rsa_key, ed_key):
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        forms: list[DKIMSigner] = [
            signer(key),
            signer(pem(key)),
            signer(pem(key).decode()),
            signer(der),
            signer(pem(key, b"hunter2"), password=b"hunter2"),
        ]
        for dkim_signer in forms:
            assert verifies(dkim_signer.sign(RFC_EXAMPLE), key)
    assert signer(rsa_key).algorithm == "rsa-sha256"
    assert signer(ed_key).algorithm == "ed25519-sha256"
    assert signer(ed_key, algorithm="ed25519-sha256").algorithm == "ed25519-sha256"


def test_signature_header_is_the_prepended_header(key: PrivateKey) -> None:
    # PKCS#1 v1.5 and Ed25519 signatures are deterministic, so two runs agree byte for byte.
    dkim_signer = signer(key, clock=lambda: NOW)
    header = dkim_signer.signature_header(RFC_EXAMPLE)
    assert header.startswith(b"DKIM-Signature: ")
    assert header.endswith(b"\r\n")
    assert dkim_signer.sign(RFC_EXAMPLE) == header + RFC_EXAMPLE


def test_bare_line_feeds_are_signed_as_crlf(key: PrivateKey) -> None:
    signed = signer(key).sign(b"From: a@example.com\nSubject: lf\n\nbody\rline\n")
    assert signed.endswith(b"From: a@example.com\r\nSubject: lf\r\n\r\nbody\r\nline\r\n")
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert verifies(signed, key)


# -- canonicalisation ------------------------------------------------------------------------


def test_rfc6376_example_canonical_forms() -> None:
    # RFC 6376 3.4.6, relaxed: headers "a:X" and "b:Y Z", body " C" and "D E".
    assert _header_relaxed(b"A: X") == b"a:X\r\n"
    assert _header_relaxed(b"B : Y\t\r\n\tZ  ") == b"b:Y Z\r\n"
    assert _body_relaxed(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"


@pytest.mark.parametrize(
    ("canonicalization", "canonical_body"),
    [("relaxed/relaxed", b" C\r\nD E\r\n"), ("simple/simple", b" C \r\nD \t E\r\n")],
)
def test_body_hash_of_the_rfc_example(
    ed_key: ed25519.Ed25519PrivateKey, canonicalization: str, canonical_body: bytes
) -> None:
    signed = signer(ed_key, canonicalization=canonicalization).sign(RFC_EXAMPLE)
    assert tags(signed)["bh"] == base64.b64encode(hashlib.sha256(canonical_body).digest()).decode()


@pytest.mark.parametrize(
    ("canonicalization", "canonical_body"),
    [("relaxed/relaxed", b""), ("relaxed/simple", b"\r\n")],  # RFC 6376 3.4.3-3.4.4, erratum
)
def test_body_hash_of_an_empty_body(
    ed_key: ed25519.Ed25519PrivateKey, canonicalization: str, canonical_body: bytes
) -> None:
    for message in (b"From: a@example.com\r\n\r\n", b"From: a@example.com\r\n\r\n\r\n\r\n"):
        signed = signer(ed_key, canonicalization=canonicalization).sign(message)
        expected = base64.b64encode(hashlib.sha256(canonical_body).digest()).decode()
        assert tags(signed)["bh"] == expected


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_whitespace_changes_break_only_simple_canonicalization(
    ed_key: ed25519.Ed25519PrivateKey, canonicalization: str
) -> None:
    message = b"From: a@example.com\r\nSubject: hello world\r\n\r\nsome text\r\n"
    signed = signer(ed_key, canonicalization=canonicalization).sign(message)
    header_canon, body_canon = canonicalization.split("/")
    refolded = signed.replace(b"Subject: hello world", b"subject:   hello\r\n\t world ")
    assert verifies(refolded, ed_key) is (header_canon == "relaxed")
    respaced = signed.replace(b"some text\r\n", b"some \t text  \r\n\r\n \r\n")
    assert verifies(respaced, ed_key) is (body_canon == "relaxed")


# -- tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_tampering_breaks_the_signature(
    key: PrivateKey, messages: dict[str, bytes], canonicalization: str
) -> None:
    signed = signer(key, canonicalization=canonicalization).sign(messages["plain"])
    assert verifies(signed, key)
    assert not verifies(signed.replace(b"Second line", b"Second lime"), key)
    assert not verifies(signed.replace(b"Subject: Hello", b"Subject: Hullo"), key)
    assert not verifies(signed.replace(b"b@example.com", b"x@example.com"), key)
    dkim_header = signature_lines(signed)
    bh_line = next(line for line in dkim_header if b" bh=" in line)
    assert not verifies(signed.replace(bh_line, bh_line.replace(b"bh=", b"bh=A")), key)


def test_oversigning_stops_added_headers(key: PrivateKey, messages: dict[str, bytes]) -> None:
    message = messages["plain"]
    plain, oversigned = signer(key).sign(message), signer(key, oversign=True).sign(message)
    extra_subject = b"Subject: Urgent: wire the money\r\n"
    # Without oversigning, a verifier reads the bottom Subject and the added one slips past.
    assert verifies(extra_subject + plain, key)
    assert verifies(oversigned, key)
    assert not verifies(extra_subject + oversigned, key)
    assert not verifies(b"From: ceo@example.com\r\n" + oversigned, key)
    assert not verifies(b"To: else@example.com\r\n" + oversigned, key)


def test_every_instance_of_a_header_is_signed(ed_key: ed25519.Ed25519PrivateKey) -> None:
    message = b"From: a@example.com\r\nX-Tag: one\r\nSubject: s\r\nX-Tag: two\r\n\r\nbody\r\n"
    signed = signer(ed_key, headers=["from", "x-tag"]).sign(message)
    assert tags(signed)["h"] == "from:x-tag:x-tag"
    assert verifies(signed, ed_key)
    assert not verifies(signed.replace(b"X-Tag: one", b"X-Tag: 1"), ed_key)
    assert not verifies(signed.replace(b"X-Tag: two", b"X-Tag: 2"), ed_key)
    assert verifies(signed.replace(b"Subject: s", b"Subject: unsigned"), ed_key)


# -- the header ------------------------------------------------------------------------------


def test_tags(key: PrivateKey, messages: dict[str, bytes]) -> None:
    dkim_signer = DKIMSigner(
        DOMAIN, SELECTOR, key, expires_in=3600, identity="news@mail.example.com", clock=lambda: NOW
    )
    found = tags(dkim_signer.sign(messages["plain"]))
    algorithm = "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"
    body = b"Hi there\r\nSecond line\r\n"
    assert found == {
        "v": "1",
        "a": algorithm,
        "c": "relaxed/relaxed",
        "d": "example.com",
        "s": "sel",
        "i": "news@mail.example.com",
        "t": str(NOW),
        "x": str(NOW + 3600),
        "h": "from:to:subject:date:message-id:mime-version:content-type:content-transfer-encoding",
        "bh": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "b": found["b"],
    }
    assert len(base64.b64decode(found["b"], validate=True)) == (
        256 if algorithm == "rsa-sha256" else 64
    )


def test_optional_tags(ed_key: ed25519.Ed25519PrivateKey) -> None:
    found = tags(signer(ed_key, timestamp=False, clock=lambda: NOW).sign(RFC_EXAMPLE))
    assert "t" not in found
    assert "x" not in found
    assert "i" not in found
    assert "l" not in found
    found = tags(
        signer(ed_key, timestamp=False, expires_in=60, clock=lambda: NOW).sign(RFC_EXAMPLE)
    )
    assert "t" not in found
    assert found["x"] == str(NOW + 60)
    odd = signer(ed_key, identity="a;b=cd@example.com", oversign=True)
    assert odd.identity == "a=3Bb=3Dcd@example.com"
    assert tags(odd.sign(RFC_EXAMPLE))["h"] == "from:from:a:a:b:b"


def test_expired_signatures_fail(ed_key: ed25519.Ed25519PrivateKey) -> None:
    three_days_ago = time.time() - 3 * 86400
    stale = signer(ed_key, expires_in=86400, clock=lambda: three_days_ago)
    assert not verifies(stale.sign(RFC_EXAMPLE), ed_key)
    old_but_valid = signer(ed_key, clock=lambda: three_days_ago)
    assert verifies(old_but_valid.sign(RFC_EXAMPLE), ed_key)


@pytest.mark.parametrize("oversign", [False, True])
def test_folding(key: PrivateKey, messages: dict[str, bytes], oversign: bool) -> None:
    dkim_signer = signer(key, oversign=oversign, identity="newsletter@mail.example.com")
    signed = dkim_signer.sign(messages["multipart"])
    lines = signature_lines(signed)
    assert len(lines) > 3
    assert lines[0].startswith(b"DKIM-Signature: v=1; a=")
    for line in lines:
        assert len(line) <= 78, line
        assert line == line.rstrip(), line
    for line in lines[1:]:  # continuation lines: one space, then text
        assert line.startswith(b" ")
        assert not line[1:2].isspace()
    assert signed.split(b"\r\n")[len(lines)] == b"From: a@example.com"
    found = tags(signed)
    assert found["h"].startswith("from:" + "from:" * oversign + "to:")
    assert found["i"] == "newsletter@mail.example.com"


# -- bad input -------------------------------------------------------------------------------


def test_messages_without_from_or_not_bytes(ed_key: ed25519.Ed25519PrivateKey) -> None:
    dkim_signer = signer(ed_key)
    with pytest.raises(FluxMailException, match="without a From header") as info:
        dkim_signer.sign(b"To: b@example.com\r\nSubject: x\r\n\r\nbody\r\n")
    assert info.value.code == "invalid_params"
    with pytest.raises(FluxMailException, match="as bytes") as info:
        dkim_signer.sign("From: a@example.com\r\n\r\n")  # type: ignore[arg-type]
    assert info.value.code == "invalid_params"
    assert verifies(dkim_signer.sign(bytearray(RFC_EXAMPLE)), ed_key)  # type: ignore[arg-type]


def small_rsa_key(bits: int = 512) -> rsa.RSAPrivateKey:
    """An RSA key too small for ``generate_private_key`` (which refuses under 1024 bits)."""
    rng = random.Random(6376)

    def prime() -> int:
        while True:
            candidate = rng.getrandbits(bits // 2) | (1 << (bits // 2 - 1)) | 1
            if all(pow(a, candidate - 1, candidate) == 1 for a in (2, 3, 5, 7, 11, 13, 17)):
                return candidate

    p, q, e = prime(), prime(), 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def secret_fragments(text: str | bytes) -> list[str]:
    """The body lines of a PEM (or the base64 of DER), any of which would leak the key."""
    if isinstance(text, bytes):
        text = text.decode() if text.startswith(b"-----") else base64.b64encode(text).decode()
    return [line for line in text.splitlines() if len(line) >= 16 and "-----" not in line]


def test_invalid_config(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> None:
    rsa_pem, ed_pem = pem(rsa_key), pem(ed_key)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases: list[tuple[Callable[[], object], str, list[str]]] = [
        # (constructor, what the message must say, secrets that must not appear)
        (lambda: DKIMSigner(DOMAIN, SELECTOR, b"not a key"), "could not be read", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, rsa_pem[:-80]), "could not be read", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, "dkim/private.pem"), "file", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, public_pem), "public key", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ec_key), "not supported", []),  # type: ignore[arg-type]
        (lambda: DKIMSigner(DOMAIN, SELECTOR, 42), "PEM", []),  # type: ignore[arg-type]
        (lambda: DKIMSigner(DOMAIN, SELECTOR, small_rsa_key()), "512-bit", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, pem(ed_key, b"pw")), "password=", []),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, pem(ed_key, b"pw"), password=b"wrong"),
            "password= is wrong",
            [],
        ),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, algorithm="rsa-sha256"),
            "does not match the key",
            [],
        ),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, algorithm="rsa-sha1"),  # type: ignore[arg-type]
            "'rsa-sha256' or 'ed25519-sha256'",
            [],
        ),
        # Swapped arguments put the key where the domain belongs: it must not be echoed.
        (lambda: DKIMSigner(rsa_pem.decode(), SELECTOR, DOMAIN), "domain", [rsa_pem.decode()]),
        (lambda: DKIMSigner(DOMAIN, ed_pem.decode(), DOMAIN), "selector", [ed_pem.decode()]),
        (lambda: DKIMSigner("exa mple.com", SELECTOR, ed_key), "spaces", []),
        (lambda: DKIMSigner("example.com\r\nBcc: x", SELECTOR, ed_key), "line breaks", []),
        (lambda: DKIMSigner("", SELECTOR, ed_key), "not a valid name", []),
        (lambda: DKIMSigner("-bad.example.com", SELECTOR, ed_key), "not a valid name", []),
        (lambda: DKIMSigner("example", SELECTOR, ed_key), "e.g. 'example.com'", []),
        (lambda: DKIMSigner("192.0.2.1", SELECTOR, ed_key), "e.g. 'example.com'", []),
        (lambda: DKIMSigner(b"example.com", SELECTOR, ed_key), "string", []),  # type: ignore[arg-type]
        # The IDNA codec's NFKC turns compatibility characters into ASCII specials (";", ">",
        # ","), so the name is checked after encoding.
        (lambda: DKIMSigner("x\uff1bevil.example.com", SELECTOR, ed_key), "not a valid", []),
        (lambda: DKIMSigner("b\uff1e\u00b4x.com", SELECTOR, ed_key), "not a valid", []),
        (lambda: DKIMSigner(DOMAIN, "sel;x", ed_key), "not a valid name", []),
        (lambda: DKIMSigner(DOMAIN, "sel\n", ed_key), "line breaks", []),
        (lambda: DKIMSigner(DOMAIN, "a" * 64, ed_key), "not a valid name", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, headers=["to"]), '"from"', []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, headers="from"), "list", []),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, headers=["from", "bad:name"]),
            "not a header name",
            [],
        ),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, canonicalization="relaxed"),  # type: ignore[arg-type]
            "relaxed/relaxed",
            [],
        ),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, canonicalization="fancy/simple"),  # type: ignore[arg-type]
            "canonicalization",
            [],
        ),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, expires_in=0), "expires_in", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, expires_in=True), "expires_in", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, identity="a@evil.com"), "subdomain", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, identity="example.com"), "look like", []),
        (lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, identity="a b@example.com"), "spaces", []),
        (
            lambda: DKIMSigner(DOMAIN, SELECTOR, ed_key, identity="v@x\uff0cevil\uff20example.com"),
            "not a valid name",
            [],
        ),
    ]
    for make, says, extra_secrets in cases:
        with pytest.raises(FluxMailException) as info:
            make()
        exc = info.value
        assert exc.code == "invalid_config", exc
        assert says in str(exc), str(exc)
        shown = "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])
        secrets = [*secret_fragments(rsa_pem), *secret_fragments(ed_pem), *extra_secrets]
        for secret in secrets:
            assert secret not in shown


def test_repr_and_attributes_hide_the_key(key: PrivateKey) -> None:
    dkim_signer = signer(pem(key).decode())
    text = repr(dkim_signer) + str(dkim_signer)
    assert "example.com" in text
    assert "sel" in text
    for secret in secret_fragments(pem(key)):
        assert secret not in text
    assert dkim_signer.domain == DOMAIN
    assert dkim_signer.selector == SELECTOR
    assert dkim_signer.canonicalization == "relaxed/relaxed"
    assert dkim_signer.headers == HEADERS
    assert dkim_signer.oversign is False
    assert dkim_signer.expires_in is None


def test_domain_and_selector_are_normalised(ed_key: ed25519.Ed25519PrivateKey) -> None:
    dkim_signer = DKIMSigner("Bücher.Example", "Mail-2025", ed_key)
    assert dkim_signer.domain == "xn--bcher-kva.example"
    assert dkim_signer.selector == "mail-2025"
    assert dkim_signer.dns_name == "mail-2025._domainkey.xn--bcher-kva.example"


def test_dns_record_is_what_verifiers_need(key: PrivateKey) -> None:
    dkim_signer = signer(key)
    assert dkim_signer.dns_name == "sel._domainkey.example.com"
    assert dkim_signer.dns_record().encode() == txt_record(key)


def test_missing_cryptography_says_how_to_install(tmp_path: Path) -> None:
    script = tmp_path / "no_crypto.py"
    script.write_text(
        "import sys\n"
        "sys.modules['cryptography'] = None  # makes every cryptography import fail\n"
        "from fluxmail import FluxMailException\n"
        "from fluxmail.dkim import DKIMSigner\n"
        "try:\n"
        "    DKIMSigner('example.com', 'sel', b'key')\n"
        "except FluxMailException as exc:\n"
        "    print(exc.code, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == (
        "invalid_config DKIM signing needs the cryptography package: pip install 'fluxmail[dkim]'"
    )


# -- through a real SMTP server --------------------------------------------------------------


@pytest.mark.parametrize("canonicalization", ["relaxed/relaxed", "simple/simple"])
def test_signed_message_survives_smtp(
    key: PrivateKey, messages: dict[str, bytes], canonicalization: str
) -> None:
    dkim_signer = signer(key, canonicalization=canonicalization, oversign=True)
    envelope = Envelope("a@example.com", ("b@example.com",))
    names = ["multipart", "dot_lines", "unicode", "bare_lf"]
    with SMTPTestServer() as server:
        mailer = FluxMail("smtp", server.host, port=server.port, sender="a@example.com")
        for name in names:
            mailer.send_message(dkim_signer.sign(messages[name]), envelope=envelope)
        received = server.wait_for_messages(len(names))
    for name, message in zip(names, received, strict=True):
        assert message.data.startswith(b"DKIM-Signature: "), name
        assert verifies(message.data, key), name


# -- wired into the mailer and the bulk fast path ----------------------------------------------


def test_mailer_signs_every_send(key: PrivateKey, plain_smtp: SMTPTestServer) -> None:
    mailer = FluxMail(
        "smtp", plain_smtp.host, port=plain_smtp.port, sender=f"news@{DOMAIN}",
        dkim=signer(key), max_retries=1, retry_delay=0,
    )  # fmt: skip
    plain_smtp.faults.transient_failures = 1  # signed once, not once per attempt
    mailer.create("Signed", ["to@example.com"], "Hello", bcc=["hidden@example.com"]).send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.data.count(b"DKIM-Signature:") == 1
    assert verifies(received.data, key)


def test_message_template_signs(key: PrivateKey, plain_smtp: SMTPTestServer) -> None:
    from fluxmail import MessageTemplate

    template = MessageTemplate(
        sender=f"news@{DOMAIN}", subject="Hi {{ n }}", text="Body {{ n }}", sign=signer(key).sign
    )
    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port)
    with mailer.pool(max_connections=1) as pool:
        pool.send_many([template.render(f"u{i}@example.com", n=i) for i in range(3)])
    assert all(verifies(m.data, key) for m in plain_smtp.wait_for_messages(3))


def test_display_shows_the_signed_bytes_that_are_sent(key: PrivateKey) -> None:
    """display() is the wire: the same DKIM-signed bytes that send() then puts on it."""
    from fluxmail.testing import capture

    mailer = FluxMail("smtp", "localhost", sender="a@example.com", dkim=signer(key))
    shown = mailer.create("Signed", ["b@example.com"], "Body\n").display()
    with capture() as outbox:
        mailer.send()
    (sent,) = outbox
    assert shown == "Email Preview:\n" + sent.raw.decode().replace("\r\n", "\n")
    assert sent.raw.startswith(b"DKIM-Signature: ")
    assert verifies(sent.raw, key)
