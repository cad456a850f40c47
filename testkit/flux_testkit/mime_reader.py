"""A strict, minimal reader of RFC 5322 / MIME messages: the tests' second parser.

Why not a library: the Python MIME parsers on PyPI (``mail-parser``, ``eml-parser``) wrap
the standard library's ``email`` package, so they share its leniency and its bugs, and
``flanker`` is unmaintained. This reader shares no code with ``email``: it is written from
the RFCs, and it is *strict* where ``email`` is forgiving, so a message that reads back here
is well formed, not merely parseable. It raises :class:`MalformedMessageError` for:

* a line ending other than CRLF, a line over 998 octets, a NUL (RFC 5322 2.1.1, 2.3);
* a header line that is neither ``name: value`` (``name`` in ftext) nor a continuation;
* 8-bit header bytes that are not UTF-8 (RFC 6532 allows UTF-8 only);
* a malformed encoded word's payload, an unknown transfer encoding, base64 that does not
  decode, 8-bit bytes in a part declared 7bit;
* a multipart body without its boundary parameter, its first delimiter or its close
  delimiter, or a boundary that occurs inside one of its parts.

It decodes what FluxMail writes: RFC 2047 ``B`` and ``Q`` encoded words (adjacent ones joined
without the blanks between them), quoted strings, RFC 2231 parameters (``name*``, ``name*0*``
sections, charsets), 7bit / 8bit / quoted-printable / base64 bodies, nested multiparts. It
does not handle comments in structured fields, group syntax or obsolete forms: FluxMail never
writes them, and a test that meets them should fail.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

CRLF = b"\r\n"
_FIELD = re.compile(rb"([!-9;-~]+):(.*)", re.DOTALL)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


class MalformedMessageError(ValueError):
    """The message breaks a rule this reader enforces (the text says which)."""


@dataclass
class Part:
    """One MIME entity: its header fields (unfolded, in order) and, for a leaf, its content."""

    headers: list[tuple[str, str]]
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    disposition: str | None = None
    disposition_params: dict[str, str] = field(default_factory=dict)
    content: bytes = b""  # transfer-decoded (leaves only)
    parts: list[Part] = field(default_factory=list)  # multiparts only

    def get_all(self, name: str) -> list[str]:
        """The raw (unfolded, undecoded) values of every field called ``name``."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def text(self, name: str) -> str | None:
        """The decoded text of the one field ``name`` (None if absent; an error if repeated)."""
        values = self.get_all(name)
        if len(values) > 1:
            raise MalformedMessageError(f"{name} appears {len(values)} times")
        # The blank after the colon is not content; unfolding keeps every other blank.
        return decode_words(values[0].lstrip(" \t")) if values else None

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """``(display name, addr-spec)`` of every mailbox in the field ``name``."""
        values = self.get_all(name)
        if len(values) > 1:
            raise MalformedMessageError(f"{name} appears {len(values)} times")
        return parse_mailboxes(values[0]) if values else []

    @property
    def filename(self) -> str | None:
        return self.disposition_params.get("filename")

    @property
    def charset(self) -> str:
        return self.params.get("charset", "us-ascii")

    def decoded_text(self) -> str:
        """A text part's content as text, line endings as LF."""
        return self.content.decode(self.charset).replace("\r\n", "\n")

    def walk(self) -> list[Part]:
        """This entity and every entity inside it, depth first."""
        found = [self]
        for part in self.parts:
            found += part.walk()
        return found

    def leaves(self) -> list[Part]:
        return [part for part in self.walk() if not part.parts]


def read_message(raw: bytes) -> Part:
    """Parse a whole message (bytes as sent after DATA, before dot-stuffing)."""
    if b"\x00" in raw:
        raise MalformedMessageError("NUL in the message")
    if not raw.endswith(CRLF):
        raise MalformedMessageError("the message does not end with CRLF")
    for line in raw[:-2].split(CRLF):
        if b"\r" in line or b"\n" in line:
            raise MalformedMessageError(f"bare CR or LF in {line[:60]!r}")
        if len(line) > 998:
            raise MalformedMessageError(f"a line of {len(line)} octets")
    return _entity(raw, top=True)


def _entity(raw: bytes, *, top: bool = False) -> Part:
    if raw.startswith(CRLF):
        head, body = b"", raw[2:]
    elif CRLF + CRLF in raw:
        head, _, body = raw.partition(CRLF + CRLF)
        head += CRLF
    else:
        head, body = raw, b""
    part = Part(_header_fields(head))
    content_type = part.get_all("Content-Type")
    if len(content_type) > 1:
        raise MalformedMessageError("Content-Type appears more than once")
    if content_type:
        part.content_type, part.params = _parameterised(content_type[0])
    elif not top:
        part.content_type = "text/plain"
    disposition = part.get_all("Content-Disposition")
    if disposition:
        part.disposition, part.disposition_params = _parameterised(disposition[0])
    if part.content_type.startswith("multipart/"):
        part.parts = [_entity(chunk) for chunk in _split_multipart(body, part.params)]
        return part
    encodings = part.get_all("Content-Transfer-Encoding")
    encoding = encodings[0].strip().lower() if encodings else "7bit"
    part.content = _transfer_decode(body, encoding)
    return part


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in head.split(CRLF)[:-1] if head else []:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedMessageError("a continuation line before the first field")
            name, value = fields[-1]
            fields[-1] = (name, value + _utf8(line))  # unfolding removes only the CRLF
            continue
        match = _FIELD.fullmatch(line)
        if match is None:
            raise MalformedMessageError(f"not a header field: {line[:60]!r}")
        fields.append((match[1].decode("ascii"), _utf8(match[2])))
    return fields


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError(f"header bytes that are not UTF-8: {data[:60]!r}") from exc


def decode_words(value: str) -> str:
    """Unstructured text with RFC 2047 encoded words decoded; linear white space between two
    adjacent encoded words is dropped (RFC 2047 6.2)."""
    out: list[str] = []
    position = 0
    previous_encoded = False
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        if not (previous_encoded and gap.strip(" \t") == ""):
            out.append(gap)
        out.append(_decode_word(match[1], match[2], match[3]))
        position = match.end()
        previous_encoded = True
    out.append(value[position:])
    return "".join(out)


def _decode_word(charset: str, kind: str, text: str) -> str:
    charset = charset.split("*")[0]  # RFC 2231 language suffix
    try:
        if kind in "bB":
            data = base64.b64decode(text, validate=True)
        else:
            data = re.sub(
                rb"=([0-9A-Fa-f]{2})",
                lambda m: bytes([int(m[1], 16)]),
                text.replace("_", " ").encode("ascii"),
            )
        return data.decode(charset)
    except (binascii.Error, UnicodeError, LookupError, ValueError) as exc:
        raise MalformedMessageError(
            f"a malformed encoded word =?{charset}?{kind}?{text}?="
        ) from exc


def _split_top(value: str, separator: str) -> list[str]:
    """``value`` split at ``separator`` outside quoted strings and angle brackets."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or depth:
        raise MalformedMessageError(f"an unclosed quote or angle bracket in {value[:80]!r}")
    pieces.append("".join(current))
    return pieces


def _unquote(text: str) -> str:
    """A phrase: quoted strings unquoted, encoded words (outside quotes) decoded."""
    out: list[str] = []
    for index, chunk in enumerate(re.split(r'("(?:[^"\\]|\\.)*")', text)):
        if index % 2:
            out.append(re.sub(r"\\(.)", r"\1", chunk[1:-1], flags=re.DOTALL))
        else:
            out.append(decode_words(chunk))
    return "".join(out)


def parse_mailboxes(value: str) -> list[tuple[str, str]]:
    """A mailbox list: ``addr-spec`` or ``phrase <addr-spec>``, comma-separated."""
    mailboxes = []
    for item in _split_top(value, ","):
        text = item.strip(" \t")
        if not text:
            raise MalformedMessageError(f"an empty mailbox in {value[:80]!r}")
        if text.endswith(">"):
            phrase, _, addr = text[:-1].rpartition("<")
            name = _unquote(phrase.strip(" \t"))
            # folding white space inside a quoted name unfolds to the blanks it held
        else:
            name, addr = "", text
        if "@" not in addr or any(c in addr for c in ' \t<>"'):
            raise MalformedMessageError(f"not an addr-spec: {addr!r}")
        mailboxes.append((name, addr))
    return mailboxes


def _parameterised(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` (or a disposition) with RFC 2231 parameters joined."""
    pieces = _split_top(value, ";")
    kind = pieces[0].strip(" \t").lower()
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in pieces[1:]:
        name, equals, raw = piece.strip(" \t").partition("=")
        if not equals:
            raise MalformedMessageError(f"a parameter without a value: {piece!r}")
        name = name.strip().lower()
        raw = raw.strip(" \t")
        text = _unquote(raw) if raw.startswith('"') else raw
        if "*" in name:
            base, _, rest = name.partition("*")
            encoded = rest.endswith("*") or rest == ""
            number = rest.rstrip("*")
            extended.setdefault(base, {})[int(number) if number else 0] = (text, encoded)
        else:
            plain[name] = text
    for base, sections in extended.items():
        plain[base] = _rfc2231(base, sections)
    return kind, plain


def _rfc2231(name: str, sections: dict[int, tuple[str, bool]]) -> str:
    if sorted(sections) != list(range(len(sections))):
        raise MalformedMessageError(f"parameter {name} has missing sections {sorted(sections)}")
    first_text, first_encoded = sections[0]
    charset = "us-ascii"
    if first_encoded:
        charset, quote1, rest = first_text.partition("'")
        _language, quote2, first_text = rest.partition("'")
        if not (quote1 and quote2):
            raise MalformedMessageError(f"parameter {name}* lacks charset'language'")
    data = b""
    for index in range(len(sections)):
        text, encoded = sections[index]
        if index == 0:
            text = first_text
        data += unquote_to_bytes(text) if encoded else text.encode("ascii")
    try:
        return data.decode(charset or "us-ascii")
    except (UnicodeError, LookupError) as exc:
        raise MalformedMessageError(f"parameter {name} is not {charset}") from exc


def _split_multipart(body: bytes, params: dict[str, str]) -> list[bytes]:
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedMessageError("a multipart without a boundary parameter")
    delimiter = b"--" + boundary.encode("ascii")
    text = CRLF + body  # the CRLF before a delimiter belongs to it
    first = text.find(CRLF + delimiter + CRLF)
    if first < 0:
        raise MalformedMessageError(f"no first delimiter {delimiter!r}")
    close = text.find(CRLF + delimiter + b"--", first)
    if close < 0:
        raise MalformedMessageError(f"no close delimiter {delimiter!r}--")
    inner = text[first + len(CRLF + delimiter + CRLF) : close]
    parts = inner.split(CRLF + delimiter + CRLF)
    for part in parts:
        if delimiter in part:
            raise MalformedMessageError("a part holds its multipart's boundary")
    # Each part keeps its own last line break: the CRLF taken away was the delimiter's.
    return parts


def _transfer_decode(body: bytes, encoding: str) -> bytes:
    if encoding in ("7bit", "8bit", "binary"):
        if encoding == "7bit" and not body.isascii():
            raise MalformedMessageError("8-bit bytes in a 7bit part")
        return body
    if encoding == "base64":
        try:
            return base64.b64decode(body.replace(CRLF, b""), validate=True)
        except binascii.Error as exc:
            raise MalformedMessageError(f"base64 that does not decode: {exc}") from exc
    if encoding == "quoted-printable":
        if not body.isascii():
            raise MalformedMessageError("8-bit bytes in a quoted-printable part")
        lines = body.split(CRLF)
        decoded = b""
        for index, line in enumerate(lines):
            if line.endswith(b"="):  # a soft line break: the lines join
                decoded += _unqp(line[:-1])
            else:
                decoded += _unqp(line) + (CRLF if index < len(lines) - 1 else b"")
        return decoded
    raise MalformedMessageError(f"unknown Content-Transfer-Encoding {encoding!r}")


def _unqp(line: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        return bytes([int(match[1], 16)])

    if re.search(rb"=(?![0-9A-F]{2})", line):
        raise MalformedMessageError(f"a bad quoted-printable escape in {line[:60]!r}")
    return re.sub(rb"=([0-9A-F]{2})", one, line)
