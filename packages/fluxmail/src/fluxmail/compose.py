"""``MessageTemplate``: personalised bulk mail, compiled once and filled per recipient.

``create()`` builds each message with the email package, which is thorough and slow (it costs
about as much as sending). A bulk send repeats the same structure thousands of times, so this
module works the other way round: at construction it validates everything static, encodes the
attachments, fixes the MIME boundaries and pre-renders the constant headers into bytes; per
recipient it only renders the templated parts, encodes them with C-level codecs
(``binascii``), and joins byte strings. The output is ordinary MIME, checked in the tests
against the email package's parser and against ``create()``'s output.

    tpl = MessageTemplate(sender="News <news@example.com>", subject="Hi {{ name }}",
                          text="Hello {{ name }}, ...", html="<p>Hello {{ name }}</p>")
    envelope, data = tpl.render("ada@example.com", name="Ada")
"""

from __future__ import annotations

import binascii
import itertools
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from email import policy
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import markupsafe

from fluxmail.addresses import check_header_text, parse_address
from fluxmail.errors import FluxMailException
from fluxmail.message import read_file
from fluxmail.protocol.commands import Envelope, has_control_chars
from fluxmail.protocol.data import normalize_newlines

CRLF = b"\r\n"
_POLICY = policy.SMTP
_UTF8_POLICY = policy.SMTPUTF8
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_LONGEST_LINE = 998  # RFC 5322 2.1.1, without the CRLF
_ROLES = {"To": "recipient", "From": "sender", "Reply-To": "reply_to"}

Render = Callable[[Mapping[str, Any]], str]


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _substitution(source: str, *, html: bool) -> Render | None:
    """A renderer for sources that only substitute names (``Hi {{ name }}``), or None.

    Most bulk templates are exactly that; joining strings is several times faster than a
    Jinja render, and gives the same output (escaped like Jinja's autoescape for HTML).
    """
    pieces = _PLACEHOLDER.split(source)
    texts, names = pieces[0::2], pieces[1::2]
    if any(marker in text for text in texts for marker in ("{{", "{%", "{#")):
        return None
    convert: Callable[[Any], str] = (lambda v: str(markupsafe.escape(v))) if html else str

    def render(context: Mapping[str, Any]) -> str:
        out = [texts[0]]
        for name, text in zip(names, texts[1:], strict=True):
            try:
                value = context[name]
            except KeyError:
                raise FluxMailException(
                    f"Template failed to render: {name!r} is undefined", "template_error"
                ) from None
            try:
                out.append(convert(value))
            except Exception as exc:  # a value whose str() fails is the data's problem
                raise FluxMailException(
                    f"Template failed to render {name!r}: {exc}", "template_error"
                ) from exc
            out.append(text)
        return "".join(out)

    return render


def _compile(source: str | None, *, html: bool) -> Render | None:
    """A renderer for a Jinja source: plain substitution where it suffices, else Jinja."""
    if source is None:
        return None
    if (simple := _substitution(source, html=html)) is not None:
        return simple
    # Sandboxed: templates may be written by people who should not reach Python objects.
    environment = jinja2.sandbox.SandboxedEnvironment(
        autoescape=html, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    try:
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise FluxMailException(
            f"Template syntax error on line {exc.lineno}: {exc.message}", "template_error"
        ) from exc

    def render(context: Mapping[str, Any]) -> str:
        try:
            return template.render(context)
        except Exception as exc:  # a template is code: any error in it is the template's
            raise FluxMailException(f"Template failed to render: {exc}", "template_error") from exc

    return render


def _header(name: str, value: str) -> bytes:
    """One header line; plain ASCII goes straight through, anything else via the policy."""
    if has_control_chars(value):
        raise FluxMailException(
            f"{name} contains a line break or control character", "invalid_params"
        )
    check_header_text(value, name)  # an encoded word would be decoded, and could inject
    if value.isascii() and len(name) + len(value) < 76:
        return f"{name}: {value}\r\n".encode("ascii")
    return _fold(name, value)


def _fold(name: str, value: str, *, utf8: bool = False) -> bytes:
    """A header line through the email package: RFC 2047 for non-ASCII text and names, or
    raw UTF-8 where the address itself needs SMTPUTF8."""
    folding = _UTF8_POLICY if utf8 else _POLICY
    folded: str = folding.header_factory(name, value).fold(policy=folding)
    return folded.encode("utf-8")


def _address_header(name: str, value: str) -> tuple[bytes, str]:
    """The header line for an address and its envelope form."""
    if _PLAIN_ADDRESS.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii"), value
    address = parse_address(value, role=_ROLES.get(name, name))
    return _fold(name, str(address), utf8=not address.username.isascii()), address.addr_spec


def _encode_text(text: str) -> tuple[bytes, bytes]:
    """The Content-Transfer-Encoding and the encoded body for one text part."""
    data = text.encode("utf-8")
    if len(data) == len(text):  # pure ASCII
        body = normalize_newlines(data)
        if max(map(len, body.split(CRLF))) <= _LONGEST_LINE:
            return b"7bit", body
    extra = len(data) - len(text)  # UTF-8 continuation bytes: a cheap measure of non-ASCII
    if extra * 3 > len(data):
        # Text is base64-encoded in its canonical form, with CRLF line breaks (RFC 2045 6.8).
        canonical = normalize_newlines(data)
        return b"base64", _wrap_base64(binascii.b2a_base64(canonical, newline=False))
    lf = normalize_newlines(data).replace(CRLF, b"\n")
    return b"quoted-printable", normalize_newlines(binascii.b2a_qp(lf, istext=True))


def _wrap_base64(encoded: bytes) -> bytes:
    """Base64 in lines of 76 characters (RFC 2045 6.8)."""
    return CRLF.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


class MessageTemplate:
    """A personalised message compiled once; :meth:`render` fills it in per recipient.

    ``subject``, ``text``, ``html`` and ``unsubscribe_url`` are Jinja templates (sandboxed;
    HTML autoescaped; an undefined name is an error, not an empty string). Static parts
    (``sender``, ``reply_to``, ``headers``, ``attachments``) are checked and encoded here,
    once; bad input raises the same codes as ``FluxMail.create()``.
    """

    def __init__(
        self,
        *,
        sender: str,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[str | Path] = (),
        unsubscribe_url: str | None = None,
        domain: str | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if text is None and html is None:
            raise FluxMailException("A message needs text, html, or both", "invalid_params")
        from_line, self.sender = _address_header("From", sender)
        static = [from_line]
        if reply_to is not None:
            static.append(_address_header("Reply-To", reply_to)[0])
        for name, value in (headers or {}).items():
            if has_control_chars(name) or ":" in name or not name.isascii():
                raise FluxMailException(f"Invalid header name {name!r}", "invalid_params")
            static.append(_header(name, value))
        static.append(b"MIME-Version: 1.0\r\n")
        self._static = b"".join(static)
        self._subject = _compile(subject, html=False)
        self._text = _compile(text, html=False)
        self._html = _compile(html, html=True)
        self._unsubscribe = _compile(unsubscribe_url, html=False)
        self._sign = sign
        self._domain = domain or self.sender.rpartition("@")[2]
        self._ids = itertools.count(1)
        self._id_prefix = f"{int(time.time())}.{secrets.token_hex(6)}"
        self._date = (0, b"")
        token = secrets.token_hex(12)
        self._alternative = f"alt-{token}".encode("ascii")
        self._mixed = f"mix-{token}".encode("ascii")
        self._attachments = b"".join(self._attachment_part(path) for path in attachments)

    def _attachment_part(self, path: str | Path) -> bytes:
        item = read_file(path, what="Attachment")
        disposition = _fold("Content-Disposition", f'attachment; filename="{item.filename}"')
        return (
            b"--" + self._mixed + CRLF
            + f"Content-Type: {item.mime_type}\r\n".encode("ascii")
            + b"Content-Transfer-Encoding: base64\r\n" + disposition + CRLF
            + _wrap_base64(binascii.b2a_base64(item.content, newline=False)) + CRLF
        )  # fmt: skip

    def render(self, to: str | Sequence[str], /, **context: Any) -> tuple[Envelope, bytes]:
        """The envelope and wire bytes of the message for ``to``, rendered with ``context``."""
        recipients = [to] if isinstance(to, str) else list(to)
        if not recipients:
            raise FluxMailException("recipients must be a non-empty list", "invalid_params")
        lines = [_address_header("To", r) for r in recipients]
        if len(lines) == 1:
            to_line = lines[0][0]
        else:
            to_line = _fold("To", ", ".join(str(parse_address(r)) for r in recipients))
        assert self._subject is not None
        subject = self._subject(context)
        if not subject.strip():
            raise FluxMailException("The rendered subject is empty", "invalid_params")
        head = [self._static, to_line, _header("Subject", subject), self._date_line()]
        head.append(
            f"Message-ID: <{self._id_prefix}.{next(self._ids)}@{self._domain}>\r\n".encode()
        )
        if self._unsubscribe is not None:
            url = self._unsubscribe(context)
            if not url.lower().startswith("https://") or any(c in url for c in " <>"):
                raise FluxMailException("unsubscribe_url must be an https:// URL", "invalid_params")
            head.append(_header("List-Unsubscribe", f"<{url}>"))
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        body = self._body(context)
        data = b"".join(head) + body
        if self._sign is not None:
            data = self._sign(data)
        return Envelope(self.sender, tuple(addr for _, addr in lines)), data

    def _date_line(self) -> bytes:
        # formatdate costs microseconds; the Date only changes once a second.
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, f"Date: {formatdate(now, localtime=True)}\r\n".encode("ascii"))
        return self._date[1]

    def _body(self, context: Mapping[str, Any]) -> bytes:
        parts = []
        if self._text is not None:
            parts.append(_text_part(self._text(context), b"plain"))
        if self._html is not None:
            parts.append(_text_part(self._html(context), b"html"))
        if len(parts) == 1:
            content = parts[0]
        else:
            content = _multipart(b"alternative", self._alternative, parts)
        if not self._attachments:
            return content
        mixed, attachments = self._mixed, self._attachments
        if mixed in content:  # never let rendered text pose as a part boundary
            mixed = f"mix-{secrets.token_hex(16)}".encode("ascii")
            attachments = attachments.replace(b"--" + self._mixed + CRLF, b"--" + mixed + CRLF)
        return (
            b'Content-Type: multipart/mixed; boundary="' + mixed + b'"\r\n\r\n'
            + b"--" + mixed + CRLF + content + CRLF + attachments + b"--" + mixed + b"--\r\n"
        )  # fmt: skip


def _text_part(text: str, subtype: bytes) -> bytes:
    # Like the email package, end the text with a newline, whatever its encoding.
    encoding, body = _encode_text(text if text.endswith(("\n", "\r")) else text + "\n")
    if not body.endswith(CRLF):
        body += CRLF
    return (
        b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\n'
        + b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + body
    )  # fmt: skip


def _multipart(subtype: bytes, boundary: bytes, parts: list[bytes]) -> bytes:
    if any(boundary in part for part in parts):  # astronomically unlikely; never silently
        boundary = f"b-{secrets.token_hex(16)}".encode("ascii")
    delimiter = b"--" + boundary
    return (
        b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"\r\n\r\n'
        # The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1): add one,
        # so each part keeps its own final line break.
        + b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--\r\n"
    )  # fmt: skip
