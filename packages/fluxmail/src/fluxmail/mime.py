"""The one MIME writer: every message FluxMail sends is written here, as bytes.

``FluxMail.create()`` (through :mod:`fluxmail.message`), :class:`~fluxmail.compose.MessageTemplate`
and everything built on them (``BulkSender``, ``EmailTemplate``, the bulk CLI) write their
headers and parts with these functions; the ``email`` package is never used to build a message
(it may parse one). Contracts of the output, relied on by the tests:

* every line ends in CRLF and holds at most 998 octets (RFC 5322 2.1.1);
* headers are folded between words by :mod:`fluxmail.folding` (RFC 2047 encoded words for
  non-ASCII text unless the message is SMTPUTF8, when UTF-8 goes raw, RFC 6532); nothing here
  writes a caller's CR or LF, callers check their text first (``has_control_chars``);
* text parts are UTF-8, 7bit when ASCII with short enough lines, else quoted-printable or
  base64 (whichever is smaller), so no relay needs 8BITMIME for the body;
* attachment file names are quoted strings when plain ASCII, else RFC 2231 ``filename*``
  parameters (UTF-8, percent-encoded, split into ``*0*``, ``*1*``... sections when long);
* a multipart boundary never occurs in the parts it separates.
"""

from __future__ import annotations

import binascii
import os
import re
import secrets
import time
from collections.abc import Sequence
from email.headerregistry import Address
from email.utils import formatdate
from urllib.parse import quote

from fluxmail.folding import address_words, fold, text_words
from fluxmail.protocol.data import normalize_newlines

CRLF = b"\r\n"
#: The longest body line written as it is: RFC 5322's 998 octets less one, the dot that DATA
#: doubles at the start of a line (RFC 5321 4.5.2), so the line on the wire stays within 1000.
LONGEST_LINE = 997
MIME_VERSION = b"MIME-Version: 1.0\r\n"


# -- headers -------------------------------------------------------------------------------------


def header(name: str, words: Sequence[str]) -> bytes:
    """The header line(s) ``name: words...``, folded between words, CRLF-terminated."""
    value = fold(name, words)
    if "\n" in value:
        value = value.replace("\n", "\r\n")
    return f"{name}: {value}\r\n".encode()


def text_header(name: str, value: str, *, utf8: bool = False) -> bytes:
    """An unstructured header (Subject, custom headers) from checked text: as written when it
    can be, else RFC 2047 encoded words (raw UTF-8 when ``utf8``)."""
    if value.isascii() and len(name) + len(value) < 76 and "  " not in value:
        return f"{name}: {value}\r\n".encode("ascii")  # the common case, without folding
    return header(name, text_words(value, utf8=utf8))


def address_header(name: str, addresses: Sequence[str | Address], *, utf8: bool = False) -> bytes:
    """An address list header (From, To, Cc, Reply-To) from checked addresses: parsed ones,
    or bare addresses as strings (already checked: an ASCII addr-spec, nothing else)."""
    if len(addresses) == 1:
        only = addresses[0]
        spec = only if isinstance(only, str) else None if only.display_name else only.addr_spec
        if spec is not None and len(name) + len(spec) < 76:
            return f"{name}: {spec}\r\n".encode()
    return header(name, address_words(addresses, utf8=utf8))


class DateLine:
    """``Date:`` lines, formatted once a second (``formatdate`` costs microseconds)."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._line = f"Date: {formatdate(now, localtime=True)}\r\n".encode("ascii")
            self._second = now
        return self._line


class MessageIds:
    """Unique Message-IDs without ``make_msgid``'s per-call cost: a random prefix per process
    (renewed in a forked child, so workers never repeat each other) and a counter."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = f"{int(time.time())}.{os.getpid()}.{secrets.token_hex(6)}"
        self._count = 0

    def __call__(self, domain: str) -> str:
        self._count += 1
        return f"<{self._prefix}.{self._count}@{domain}>"


#: The process's Date and Message-ID sources, shared by every builder.
date_line = DateLine()
message_id = MessageIds()


# -- parts ---------------------------------------------------------------------------------------


def encode_text(text: str) -> tuple[bytes, bytes]:
    """The Content-Transfer-Encoding and the encoded body of one UTF-8 text part.

    ASCII without NUL and with lines of at most 997 octets goes as it is (7bit); otherwise
    quoted-printable, or base64 when most of the text is outside ASCII.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) == len(text) and data.find(b"\x00") < 0:  # pure ASCII (find: see data.py)
        body = normalize_newlines(data)
        if not has_long_line(body):
            return b"7bit", body
    extra = len(data) - len(text)  # UTF-8 continuation bytes: a cheap measure of non-ASCII
    if extra * 3 > len(data):
        # Text is base64-encoded in its canonical form, with CRLF line breaks (RFC 2045 6.8).
        return b"base64", wrap_base64(normalize_newlines(data))
    lf = normalize_newlines(data).replace(CRLF, b"\n")
    return b"quoted-printable", normalize_newlines(binascii.b2a_qp(lf, istext=True))


#: A line longer than LONGEST_LINE holds a whole aligned window of this many octets.
_WINDOW = (LONGEST_LINE + 1) // 2


def has_long_line(body: bytes) -> bool:
    """Whether a line of ``body`` (CRLF line breaks) is longer than :data:`LONGEST_LINE`.

    A line of 998 octets or more covers a whole aligned window of 499 (the first window that
    starts inside it ends at most 997 octets in), so a body whose every window holds a line
    break has none: a few ``find`` calls instead of splitting the body into lines (which
    cost a quarter of rendering a 2 KB message). Only a window without a break is checked
    line by line.
    """
    size = len(body)
    if size <= LONGEST_LINE:
        return False
    for start in range(0, size - _WINDOW + 1, _WINDOW):
        if body.find(b"\n", start, start + _WINDOW) < 0:
            return max(map(len, body.split(CRLF))) > LONGEST_LINE
    return False


def wrap_base64(data: bytes) -> bytes:
    """``data`` in base64, in lines of 76 characters (RFC 2045 6.8), without a final CRLF."""
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= 76:
        return encoded
    return CRLF.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def text_part(text: str, subtype: bytes) -> bytes:
    """A whole ``text/<subtype>`` part (its headers, blank line and body, ending in CRLF).

    Like the email package, the text always ends with a line break.
    """
    encoding, body = encode_text(text if text.endswith(("\n", "\r")) else text + "\n")
    if not body.endswith(CRLF):
        body += CRLF
    return (
        b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\n'
        + b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + body
    )  # fmt: skip


def boundary(prefix: str) -> bytes:
    """A fresh boundary: random enough never to occur by chance in content."""
    return f"{prefix}-{secrets.token_hex(12)}".encode("ascii")


def multipart(
    subtype: bytes,
    parts: Sequence[bytes],
    mark: bytes | None = None,
    *,
    static: Sequence[bytes] = (),
) -> bytes:
    """A ``multipart/<subtype>`` part holding ``parts`` then ``static`` (each a whole part
    ending in CRLF).

    ``mark`` is the boundary to use; a fresh one replaces it if one of ``parts`` happens to
    hold it. ``static`` parts are not searched: the caller knows they cannot hold it (base64
    files written before the boundary was drawn).
    """
    mark = mark or boundary(subtype.decode("ascii")[:3])
    while any(mark in part for part in parts):  # astronomically unlikely; never silently
        mark = boundary("b")
    if static:
        parts = [*parts, *static]
    delimiter = b"--" + mark
    return (
        b"Content-Type: multipart/" + subtype + b'; boundary="' + mark + b'"\r\n\r\n'
        # The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1): add one,
        # so each part keeps its own final line break.
        + b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--\r\n"
    )  # fmt: skip


_TOKEN_FILENAME = re.compile(r"[ -~]{1,200}")  # printable ASCII, short enough for one line


def filename_params(filename: str) -> list[str]:
    """The ``filename`` parameter(s) of a Content-Disposition, as words to fold.

    Printable ASCII is a quoted string; anything else (non-ASCII, control characters, a very
    long name) is RFC 2231 UTF-8 percent-encoding, in sections of at most 60 characters.
    """
    if _TOKEN_FILENAME.fullmatch(filename):
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        return [f'filename="{escaped}"']
    encoded = quote(filename.encode("utf-8", "surrogatepass"), safe="!#$&+-.^_`|~")
    if len(encoded) <= 60:
        return [f"filename*=utf-8''{encoded}"]
    sections = []
    start = 0
    while start < len(encoded):
        end = min(start + 60, len(encoded))
        # never split a %XX escape
        while end < len(encoded) and "%" in encoded[end - 2 : end]:
            end -= 1
        sections.append(encoded[start:end])
        start = end
    first = [f"filename*0*=utf-8''{sections[0]};"]
    rest = [f"filename*{i}*={s};" for i, s in enumerate(sections[1:], 1)]
    words = first + rest
    words[-1] = words[-1].rstrip(";")
    return words


def file_part(
    content: bytes,
    mime_type: str,
    filename: str,
    *,
    disposition: str = "attachment",
    content_id: str | None = None,
) -> bytes:
    """A base64 part for a file: an attachment, or an inline image with its Content-ID."""
    head = [
        f"Content-Type: {mime_type}\r\n".encode("ascii"),
        b"Content-Transfer-Encoding: base64\r\n",
        header("Content-Disposition", [f"{disposition};", *filename_params(filename)]),
    ]
    if content_id is not None:
        head.append(f"Content-ID: <{content_id}>\r\n".encode())
    return b"".join(head) + CRLF + wrap_base64(content) + CRLF
