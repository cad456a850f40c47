"""Email address checks: what may appear in a header or an envelope, and what may not."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.headerregistry import Address

from fluxmail.errors import FluxMailException
from fluxmail.protocol.commands import has_control_chars

# Deliberately stricter than RFC 5322 (no comments, no quoted local parts, no IP literals):
# what real mailboxes look like, and nothing a header parser could be tricked by.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_LABEL = r"(?!-)[A-Za-z0-9\u0080-\U0010ffff-]{1,63}(?<!-)"
_ADDR_SPEC = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*$")
_NAME_ADDR = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>$")


def is_email(value: str) -> bool:
    """True if ``value`` is a bare address (``user@example.com``) FluxMail would accept."""
    return bool(_ADDR_SPEC.match(value)) and len(value) <= 254 and not has_control_chars(value)


def parse_address(value: object, *, role: str = "address") -> Address:
    """Parse ``"user@example.com"`` or ``"Name <user@example.com>"`` into an Address.

    Raises ``no_email`` for an empty value and ``invalid_email`` for anything malformed,
    including any line break or control character (header injection).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FluxMailException(f"The {role} is empty", "no_email")
    if not isinstance(value, str):
        raise FluxMailException(
            f"The {role} must be a string, got {type(value).__name__}", "invalid_email"
        )
    if has_control_chars(value):
        raise FluxMailException(
            f"The {role} {value!r} contains a line break or control character", "invalid_email"
        )
    text = value.strip()
    name = ""
    if match := _NAME_ADDR.match(text):
        name = match["name"].strip().strip('"').strip()
        text = match["addr"].strip()
    if not is_email(text):
        raise FluxMailException(
            f"The {role} {value!r} is not a valid email address (expected user@example.com)",
            "invalid_email",
        )
    local, _, domain = text.rpartition("@")
    return Address(display_name=name, username=local, domain=ascii_domain(domain, value))


def ascii_domain(domain: str, original: object = None) -> str:
    """The DNS (IDNA) form of ``domain``: headers without SMTPUTF8 carry only ASCII domains."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise FluxMailException(
            f"The domain of {original or domain!r} cannot be encoded for DNS (IDNA)",
            "invalid_email",
        ) from exc


def parse_addresses(values: Sequence[object], *, role: str) -> list[Address]:
    return [parse_address(value, role=role) for value in values]
