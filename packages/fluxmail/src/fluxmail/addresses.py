"""Email address checks: what may appear in a header or an envelope, and what may not.

Public (exported from ``fluxmail``, covered by the public-API test): :func:`is_email`,
:func:`parse_address` and :func:`format_address`, for applications that check and write
addresses exactly as FluxMail will send them. The rest of this module is internal.
"""

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
    if text.startswith('"'):
        name, text = _quoted_name(text, value, role)
    elif match := _NAME_ADDR.match(text):
        name = match["name"].strip()
        text = match["addr"].strip()
    if not is_email(text):
        raise FluxMailException(
            f"The {role} {value!r} is not a valid email address (expected user@example.com)",
            "invalid_email",
        )
    check_header_text(name, f"The {role}'s display name", "invalid_email")
    # Measured as written: escaping doubles every quote and backslash.
    written = len(name) + name.count('"') + name.count("\\")
    if written > MAX_QUOTED_NAME and any(ch in SPECIALS for ch in name):
        raise FluxMailException(
            f"The {role}'s display name is over {MAX_QUOTED_NAME} characters and has "
            "punctuation; shorten it",
            "invalid_email",
        )
    # Words as the header folder sees them: only a space is a place to break a line.
    longest = max((len(word.encode("utf-8")) for word in name.split(" ")), default=0)
    if longest > MAX_NAME_WORD:
        raise FluxMailException(
            f"The {role}'s display name has a word of {longest} bytes; at most "
            f"{MAX_NAME_WORD} fit on a header line: shorten it or break it up",
            "invalid_email",
        )
    local, _, domain = text.rpartition("@")
    return Address(display_name=name, username=local, domain=ascii_domain(domain, value))


# Anything shaped like an encoded word, even a malformed one (the decoder is lenient: an empty
# charset still decodes), is refused rather than second-guessed.
_ENCODED_WORD = re.compile(r"=\?.*?\?=", re.DOTALL)


def check_header_text(value: str, what: str, code: str = "invalid_params") -> str:
    """Refuse text the email package would not write as given: RFC 2047 encoded words are
    decoded before they are written, so ``=?utf-8?q?=0D=0ABcc:...?=`` would become a header
    line of its own. Pass plain text; FluxMail encodes it."""
    if "=?" in value and _ENCODED_WORD.search(value):  # the test first: most text has none
        raise FluxMailException(
            f"{what} contains an RFC 2047 encoded word (=?charset?x?...?=); pass plain text, "
            "FluxMail encodes it itself",
            code,
        )
    return value


def _quoted_name(text: str, original: str, role: str) -> tuple[str, str]:
    """Split ``"Display \\"Name\\"" <addr>`` into the unescaped name and the address."""
    name: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            name.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            rest = text[index + 1 :].strip()
            if rest.startswith("<") and rest.endswith(">"):
                return "".join(name), rest[1:-1].strip()
            break
        name.append(char)
        index += 1
    raise FluxMailException(
        f"The {role} {original!r} is not a valid email address "
        '(expected "Name" <user@example.com>)',
        "invalid_email",
    )


def ascii_domain(domain: str, original: object = None) -> str:
    """The DNS (IDNA) form of ``domain``: headers without SMTPUTF8 carry only ASCII domains."""
    if domain.isascii():
        return domain
    try:
        encoded = domain.encode("idna").decode("ascii")
        # IDNA's nameprep maps compatibility characters to ASCII ("＠" to "@", "，" to ","):
        # what comes out must still be a plain host name, or one address becomes two.
        if not all(_ASCII_LABEL.match(label) for label in encoded.split(".")):
            raise UnicodeError("not a host name after IDNA")
        return encoded
    except UnicodeError as exc:
        raise FluxMailException(
            f"The domain of {original or domain!r} cannot be encoded for DNS (IDNA)",
            "invalid_email",
        ) from exc


_ASCII_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: Quoted display names longer than this are refused: the email package of Python < 3.12.x
#: folds a long quoted string without its quotes (CPython gh-80222), turning its commas and
#: angle brackets into address syntax.
MAX_QUOTED_NAME = 60
#: The longest word (in UTF-8 bytes) a display name may hold: with the address after it, a
#: header line stays within RFC 5322's 998 octets.
MAX_NAME_WORD = 700
#: RFC 5322 3.2.3: characters that keep a display name from being plain atoms.
SPECIALS = frozenset('()<>[]:;@\\,."')


def quoted_string(text: str) -> str:
    """``text`` as an RFC 5322 quoted string (backslashes and quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_address(name: str | None, address: str) -> str:
    """``Name <address>``, quoting the name when it holds specials (the inverse of
    :func:`parse_address`; non-ASCII is left for the header writer to encode)."""
    if not name:
        return address
    if any(ch in SPECIALS for ch in name):
        name = quoted_string(name)
    return f"{name} <{address}>"


def parse_addresses(values: Sequence[object], *, role: str) -> list[Address]:
    return [parse_address(value, role=role) for value in values]
