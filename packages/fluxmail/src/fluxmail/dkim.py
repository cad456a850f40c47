"""DKIM signing (RFC 6376) with RSA-SHA256 or Ed25519-SHA256 (RFC 8463) keys.

Build one :class:`DKIMSigner` (the key is parsed and every setting checked there) and let it
sign any number of messages, from any number of threads::

    signer = DKIMSigner("example.com", "mail2025", Path("dkim.pem").read_bytes())
    signed = signer.sign(message_bytes)          # the message with DKIM-Signature: on top
    print(signer.dns_name, signer.dns_record())  # what to publish in DNS

Signing reads the wire bytes, never a parsed message: the canonical forms come from bytes
operations and compiled regexes, so a message costs one pass over its body, a hash of a dozen
header lines and one private-key operation.

Choices beyond the RFC's minimum, and why:

* no ``l=`` (body length) tag: it would let anyone append content under the signature;
* ``h=`` names every instance of each configured header the message has, as verifiers read them
  (bottom-up); ``oversign=True`` names each once more, so a verifier hashes an empty header for
  the extra name and an instance added in transit (a second From) breaks the signature;
* bare CR and LF become CRLF before signing, exactly as the transport normalises them before
  sending (:mod:`fluxmail.protocol.data`), so the signature covers the bytes on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

from fluxmail.errors import FluxMailException
from fluxmail.protocol.commands import has_control_chars
from fluxmail.protocol.data import normalize_newlines

_CRYPTOGRAPHY_MISSING = False
try:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
except ImportError:  # the optional "dkim" extra is missing; DKIMSigner() says how to fix it
    _CRYPTOGRAPHY_MISSING = True

if TYPE_CHECKING:
    PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

__all__ = ["DEFAULT_HEADERS", "Algorithm", "Canonicalization", "DKIMSigner"]

Algorithm: TypeAlias = Literal["rsa-sha256", "ed25519-sha256"]
Canonicalization: TypeAlias = Literal[
    "relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"
]

#: Headers signed when present (RFC 6376 5.4.1's recommendations plus the ones that change how
#: a message is read or unsubscribed from). ``from`` is mandatory.
DEFAULT_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
    "list-unsubscribe",
    "list-unsubscribe-post",
)

#: RFC 8301: verifiers must reject RSA keys below 1024 bits (signers should use 2048).
MIN_RSA_BITS = 1024

_WIDTH = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_FOLD = "\r\n "
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable, no colon
_WSP_RUN = re.compile(rb"[ \t]+")
_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by WSP ends a field


def _config_error(message: str) -> FluxMailException:
    return FluxMailException(message, "invalid_config")


def _shown(value: str) -> str:
    """``value`` quoted for an error message, unless it might be something else entirely.

    Arguments swapped by mistake could put the private key where a domain belongs; a long or
    multi-line value is therefore never echoed back.
    """
    if len(value) > 64 or has_control_chars(value):
        return "the given value"
    return repr(value)


# -- canonicalisation (RFC 6376 3.4) ---------------------------------------------------------
# Every function takes CRLF-normalised bytes: header fields without their final CRLF.


def _header_simple(field: bytes) -> bytes:
    return field + b"\r\n"


def _header_relaxed(field: bytes) -> bytes:
    name, _, value = field.partition(b":")
    # Unfold (every CRLF inside a field is a fold), squeeze WSP runs, trim around the colon.
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def _body_simple(body: bytes) -> bytes:
    # Drop the empty lines at the end; an empty body becomes one CRLF.
    return body.rstrip(b"\r\n") + b"\r\n"


def _body_relaxed(body: bytes) -> bytes:
    # The WSP squeeze is the only regex pass, and it is needed only if some run is longer than
    # one space (base64 and most text have none); then trailing spaces and the trailing empty
    # lines go with plain bytes operations. An empty body stays empty: only a non-empty one
    # gets its final CRLF (RFC 6376 3.4.4; simple canonicalisation differs here).
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n").rstrip(b" \r\n")
    return body + b"\r\n" if body else b""


_HEADER_CANON = {"simple": _header_simple, "relaxed": _header_relaxed}
_BODY_CANON = {"simple": _body_simple, "relaxed": _body_relaxed}


def _crlf(message: bytes) -> bytes:
    """``message`` with CRLF line ends; counting first skips the rewrite for the usual case.

    Each CRLF holds one CR and one LF, so the CRs and LFs number exactly twice the CRLFs only
    when none stands alone (cheaper than counting CR and LF apart).
    """
    line_ends = len(message) - len(message.translate(None, b"\r\n"))
    if line_ends == 2 * message.count(b"\r\n"):
        return message
    return normalize_newlines(message)


def _split(message: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each without its final CRLF) and the body of a CRLF message."""
    if message.startswith(b"\r\n"):
        return [], message[2:]
    end = message.find(b"\r\n\r\n")
    if end == -1:  # headers only
        return _FIELD_SPLIT.split(message.removesuffix(b"\r\n")), b""
    return _FIELD_SPLIT.split(message[:end]), message[end + 4 :]


# -- checking the settings -------------------------------------------------------------------


def _domain_name(value: object, what: str) -> str:
    """``value`` as a lower-case ASCII domain name (IDNA for a non-ASCII one), or raise."""
    if not isinstance(value, str):
        raise _config_error(f"{what} must be a string, got {type(value).__name__}")
    if has_control_chars(value) or any(ch.isspace() for ch in value):
        raise _config_error(f"{what} must not contain spaces, line breaks or control characters")
    name = value.lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise _config_error(
                f"{what} {_shown(value)} cannot be encoded for DNS (IDNA)"
            ) from None
    if not _DOMAIN.fullmatch(name) or len(name) > 253:
        raise _config_error(
            f"{what} {_shown(value)} is not a valid name: use dot-separated labels of letters, "
            "digits and inner hyphens, at most 63 characters each"
        )
    return name


def _signing_domain(value: object) -> str:
    name = _domain_name(value, "domain")
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise _config_error(
            f"domain {_shown(name)} must be the DNS domain that signs, e.g. 'example.com' "
            "(the From address's domain, or a parent of it)"
        )
    return name


def _dkim_quoted_printable(text: str) -> str:
    """RFC 6376 2.11: every octet outside ``!``..``~``, and ``;`` and ``=``, as ``=XX``."""
    return "".join(
        chr(octet) if 0x21 <= octet <= 0x7E and octet not in b";=" else f"={octet:02X}"
        for octet in text.encode("utf-8")
    )


def _identity(value: object, domain: str) -> str:
    """The i= value: ``[local-part]@domain`` where the domain is d= or a subdomain of it."""
    if not isinstance(value, str):
        raise _config_error(f"identity must be a string, got {type(value).__name__}")
    if has_control_chars(value) or any(ch.isspace() for ch in value):
        raise _config_error("identity must not contain spaces, line breaks or control characters")
    local, at, host = value.rpartition("@")
    if not at:
        raise _config_error("identity must look like 'user@example.com' or '@example.com'")
    host = _domain_name(host, "identity's domain")
    if host != domain and not host.endswith("." + domain):
        raise _config_error(
            f"identity's domain {_shown(host)} must be {domain!r} or a subdomain of it "
            "(RFC 6376 3.5, i= tag)"
        )
    return f"{_dkim_quoted_printable(local)}@{host}"


def _header_names(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _config_error('headers must be a list of header names, e.g. ["from", "subject"]')
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            shown = _shown(name) if isinstance(name, str) else type(name).__name__
            raise _config_error(
                f"headers: {shown} is not a header name (printable ASCII without ':' or spaces)"
            )
        if name.lower() not in names:
            names.append(name.lower())
    if "from" not in names:
        raise _config_error('headers must include "from": RFC 6376 requires signing From')
    return tuple(names)


def _canonicalization(value: object) -> tuple[str, str]:
    if isinstance(value, str):
        header, _, body = value.lower().partition("/")
        if header in _HEADER_CANON and body in _BODY_CANON:
            return header, body
    choices = ", ".join(repr(c) for c in get_args(Canonicalization))
    raise _config_error(f"canonicalization must be one of {choices}")


def _expiry(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _config_error(
            f"expires_in must be a positive whole number of seconds or None, got {value!r}"
        )
    return value


def _load_key(key: object, password: bytes | None) -> PrivateKey:
    """Parse ``key``; every error says what to fix and none repeats the key or chains to it."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if isinstance(key, bytes | bytearray | memoryview):
        data = bytes(key)
        pem = b"-----BEGIN" in data
        if pem and b"PUBLIC KEY-----" in data:
            raise _config_error(
                "private_key is a public key: sign with the private key and publish the public "
                "one in DNS (see DKIMSigner.dns_record())"
            )
        try:
            loaded: object = (
                serialization.load_pem_private_key(data, password)
                if pem
                else serialization.load_der_private_key(data, password)
            )
        except TypeError:  # cryptography: encrypted without a password, or the reverse
            hint = "is encrypted: pass its password=" if password is None else "is not encrypted"
            raise _config_error(f"private_key {hint}") from None
        except (ValueError, UnsupportedAlgorithm):
            if not pem and len(data) < 1024 and data.isascii() and b"\n" not in data:
                hint = "; it looks like a file name: pass the file's contents (read_bytes())"
            elif password is not None:
                hint = ", or password= is wrong"
            else:
                hint = ""
            raise _config_error(
                "private_key could not be read: pass an RSA or Ed25519 private key as PEM "
                f"('-----BEGIN PRIVATE KEY-----') or DER{hint}"
            ) from None
        key = loaded
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise _config_error(
                f"private_key is a {key.key_size}-bit RSA key; verifiers reject keys under "
                f"{MIN_RSA_BITS} bits (RFC 8301): generate a 2048-bit key"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise _config_error(
        f"private_key of type {type(key).__name__} is not supported: DKIM signs with an RSA "
        "(rsa-sha256) or Ed25519 (ed25519-sha256) private key, as PEM, DER or a cryptography "
        "key object"
    )


# -- the signer ------------------------------------------------------------------------------


class DKIMSigner:
    """Signs messages for ``domain`` (d=) with the key published at ``selector`` (s=).

    ``private_key`` is PEM (bytes or text), DER bytes or a ``cryptography`` RSA/Ed25519 private
    key object, with ``password`` if it is encrypted; ``algorithm`` defaults to the key's.
    ``headers`` are signed when the message has them (all instances of each); ``oversign``
    names each once more so none can be added. ``identity`` is the i= tag, ``expires_in`` sets
    x= that many seconds after signing, ``timestamp`` adds t=; ``clock`` (seconds since the
    epoch) exists for tests.

    Every bad setting raises ``FluxMailException`` with code ``invalid_config``; no message,
    repr or exception chain ever contains the key.
    """

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key: bytes | str | PrivateKey,
        *,
        algorithm: Algorithm | None = None,
        headers: Sequence[str] = DEFAULT_HEADERS,
        canonicalization: Canonicalization = "relaxed/relaxed",
        identity: str | None = None,
        expires_in: int | None = None,
        timestamp: bool = True,
        oversign: bool = False,
        password: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if _CRYPTOGRAPHY_MISSING:
            raise _config_error(
                "DKIM signing needs the cryptography package: pip install 'fluxmail[dkim]'"
            )
        self._domain = _signing_domain(domain)
        self._selector = _domain_name(selector, "selector")
        if len(self.dns_name) > 253:
            raise _config_error("selector and domain are too long together for DNS (253)")
        self._identity = None if identity is None else _identity(identity, self._domain)
        self._headers = _header_names(headers)
        header_canon, body_canon = _canonicalization(canonicalization)
        self._canonicalization = f"{header_canon}/{body_canon}"
        self._canon_header = _HEADER_CANON[header_canon]
        self._canon_body = _BODY_CANON[body_canon]
        self._expires_in = _expiry(expires_in)
        if not callable(clock):
            raise _config_error("clock must be a function returning seconds since the epoch")
        self._clock = clock
        self._timestamp = bool(timestamp)
        self._oversign = bool(oversign)
        if password is not None and not isinstance(password, bytes):
            raise _config_error("password must be bytes")

        key = _load_key(private_key, password)
        inferred: Algorithm = (
            "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"
        )
        if algorithm is not None and algorithm != inferred:
            known = algorithm in get_args(Algorithm)
            raise _config_error(
                f"algorithm {_shown(str(algorithm))} does not match the key: use {inferred!r} "
                "or leave algorithm out"
                if known
                else "algorithm must be 'rsa-sha256' or 'ed25519-sha256' (or left out)"
            )
        self._algorithm = inferred
        self._key = key  # never shown: __repr__ leaves it out

        # Everything that does not depend on the message is prepared once.
        self._wanted = frozenset(name.encode("ascii") for name in self._headers)
        self._fixed_tags = [
            "v=1",
            f"a={self._algorithm}",
            f"c={self._canonicalization}",
            f"d={self._domain}",
            f"s={self._selector}",
            *([f"i={self._identity}"] if self._identity is not None else []),
        ]
        if isinstance(key, rsa.RSAPrivateKey):
            pkcs1, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())
            rsa_key = key
            self._sign_digest: Callable[[bytes], bytes] = lambda d: rsa_key.sign(
                d, pkcs1, prehashed
            )
        else:
            # RFC 8463: Ed25519 (pure) signs the SHA-256 digest, not the data itself.
            self._sign_digest = key.sign

    def __repr__(self) -> str:
        return (
            f"DKIMSigner(domain={self._domain!r}, selector={self._selector!r}, "
            f"algorithm={self._algorithm!r}, canonicalization={self._canonicalization!r}, "
            f"headers={list(self._headers)!r}, oversign={self._oversign})"
        )

    # -- read-only settings -------------------------------------------------------------------

    @property
    def domain(self) -> str:
        return self._domain

    @property
    def selector(self) -> str:
        return self._selector

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    @property
    def canonicalization(self) -> str:
        return self._canonicalization

    @property
    def headers(self) -> tuple[str, ...]:
        return self._headers

    @property
    def oversign(self) -> bool:
        return self._oversign

    @property
    def identity(self) -> str | None:
        """The i= value as written in the header (DKIM-quoted-printable)."""
        return self._identity

    @property
    def expires_in(self) -> int | None:
        return self._expires_in

    @property
    def dns_name(self) -> str:
        """Where verifiers look up the public key: ``<selector>._domainkey.<domain>``."""
        return f"{self._selector}._domainkey.{self._domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name` (one logical string; a zone file
        splits it into quoted pieces of at most 255 characters)."""
        public = self._key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            kind, der = "rsa", public.public_bytes(serialization.Encoding.DER, spki)
        else:  # RFC 8463 4.2: the bare 32-byte key
            kind, der = "ed25519", public.public_bytes_raw()
        return f"v=DKIM1; k={kind}; p={base64.b64encode(der).decode('ascii')}"

    # -- signing ------------------------------------------------------------------------------

    def sign(self, message: bytes) -> bytes:
        """``message`` (line ends made CRLF) with a ``DKIM-Signature:`` header prepended.

        Raises ``invalid_params`` if the message is not bytes or has no From header.
        """
        message = _crlf(_require_bytes(message))
        return self._signature(message) + message

    def signature_header(self, message: bytes) -> bytes:
        """Just the ``DKIM-Signature:`` header (folded, ending in CRLF) that signs ``message``.

        Prepend it to ``message`` unchanged: the signature is over the CRLF form, which is what
        FluxMail's transport sends anyway.
        """
        return self._signature(_crlf(_require_bytes(message)))

    def _signature(self, message: bytes) -> bytes:
        fields, body = _split(message)
        body_hash = hashlib.sha256(self._canon_body(body)).digest()

        found: dict[bytes, list[bytes]] = {}
        for field in fields:
            field_name = field.partition(b":")[0].rstrip(b" \t").lower()
            if field_name in self._wanted:
                found.setdefault(field_name, []).append(field)
        if b"from" not in found:
            raise FluxMailException(
                "Cannot DKIM-sign a message without a From header", "invalid_params"
            )

        digest = hashlib.sha256()
        signed: list[str] = []
        for name in self._headers:
            instances = found.get(name.encode("ascii"))
            if not instances:
                continue
            for field in reversed(instances):  # verifiers take instances from the bottom up
                digest.update(self._canon_header(field))
            signed.extend([name] * (len(instances) + self._oversign))

        tags = list(self._fixed_tags)
        now = int(self._clock())
        if self._timestamp:
            tags.append(f"t={now}")
        if self._expires_in is not None:
            tags.append(f"x={now + self._expires_in}")
        unsigned = _fold(tags, signed, base64.b64encode(body_hash).decode("ascii"))
        # The header signs itself with an empty b= and without its final CRLF (RFC 6376 3.7).
        digest.update(self._canon_header(unsigned.encode("ascii"))[:-2])
        value = base64.b64encode(self._sign_digest(digest.digest())).decode("ascii")
        return (unsigned + _fill(unsigned, value) + "\r\n").encode("ascii")


def _require_bytes(message: object) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    raise FluxMailException(
        "DKIM signing takes the message as bytes, e.g. msg.as_bytes(policy=email.policy.SMTP)",
        "invalid_params",
    )


def _fold(tags: list[str], signed: list[str], body_hash: str) -> str:
    """``DKIM-Signature: <tags>; h=...; bh=...; b=``, folded between tags (and after the
    colons of h=) so lines stay within 78 characters where a value allows it."""
    lines = ["DKIM-Signature:"]

    def put(piece: str, sep: str) -> None:
        if len(lines[-1]) + len(sep) + len(piece) <= _WIDTH:
            lines[-1] += sep + piece
        else:
            lines.append(" " + piece)

    for tag in tags:
        put(tag + ";", " ")
    names = [f"{name}:" for name in signed]
    names[0] = "h=" + names[0]
    names[-1] = names[-1][:-1] + ";"
    put(names[0], " ")
    for piece in names[1:]:
        put(piece, "")
    put(f"bh={body_hash};", " ")
    put("b=", " ")
    return "\r\n".join(lines)


def _fill(unsigned: str, value: str) -> str:
    """The b= value, continuing the last line of ``unsigned`` and folded at 78 characters.

    Verifiers delete the value together with the folding inside it, leaving ``unsigned``.
    """
    room = max(_WIDTH - (len(unsigned) - unsigned.rfind("\n") - 1), 0)
    first, rest = value[:room], value[room:]
    step = _WIDTH - 1  # a continuation line is one space, then the value
    return _FOLD.join([first, *(rest[i : i + step] for i in range(0, len(rest), step))])
