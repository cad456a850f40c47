"""``MessageTemplate``: personalised bulk mail, compiled once and filled per recipient.

A bulk send repeats the same structure thousands of times, so at construction this module
validates everything static, encodes the attachments, fixes the MIME boundaries and writes the
constant headers into bytes; per recipient it only renders the templated parts and writes them
with :mod:`fluxmail.mime`, the writer ``create()`` uses too. The output is checked in the tests
against the email package's parser, a second independent reader, and ``create()``'s output.

    tpl = MessageTemplate(sender="News <news@example.com>", subject="Hi {{ name }}",
                          text="Hello {{ name }}, ...", html="<p>Hello {{ name }}</p>")
    envelope, data = tpl.render("ada@example.com", name="Ada")
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import markupsafe

from fluxmail import mime
from fluxmail.addresses import check_header_text, parse_address
from fluxmail.errors import FluxMailException
from fluxmail.folding import text_words
from fluxmail.message import custom_headers, read_file, unsubscribe_headers
from fluxmail.protocol.commands import Envelope, has_control_chars, plain_envelope
from fluxmail.protocol.data import CRLFBytes, DataReady

_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ROLES = {"To": "recipient", "From": "sender", "Reply-To": "reply_to"}

Render = Callable[[Mapping[str, Any]], str]


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class _Substitution:
    """A source that only substitutes names (``Hi {{ name }}``): most bulk templates are
    exactly that; joining strings is several times faster than a Jinja render, and gives the
    same output (escaped like Jinja's autoescape for HTML). Calling it renders the text."""

    def __init__(self, texts: list[str], names: list[str], *, html: bool) -> None:
        self.texts, self.names = texts, names
        self._convert: Callable[[Any], str] = (lambda v: str(markupsafe.escape(v))) if html else str
        self._slots = _slots(texts)

    @classmethod
    def of(cls, source: str, *, html: bool) -> _Substitution | None:
        pieces = _PLACEHOLDER.split(source)
        texts, names = pieces[0::2], pieces[1::2]
        if any(marker in text for text in texts for marker in ("{{", "{%", "{#")):
            return None
        return cls(texts, names, html=html)

    def values(self, context: Mapping[str, Any]) -> list[str]:
        """Each placeholder's text, in order (``template_error`` for a missing name, or a
        value whose conversion fails)."""
        convert = self._convert
        try:
            return [convert(context[name]) for name in self.names]
        except Exception:  # noqa: S110 - told apart, with the right error, below
            pass
        out = []
        for name in self.names:
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
        return out

    def __call__(self, context: Mapping[str, Any]) -> str:
        out = self._slots.copy()  # see _slots
        out[1::2] = self.values(context)
        return "".join(out)


def _slots(texts: Sequence[str]) -> list[str]:
    """``texts`` with an empty slot between each two. A row fills a copy of it:
    ``out = slots.copy(); out[1::2] = values; "".join(out)``, all C-level (a ``%`` format
    scans its whole text per call, and a Python loop interleaving the pieces costs more than
    the copy)."""
    slots = [""] * (2 * len(texts) - 1)
    slots[0::2] = texts
    return slots


class _PlainPart:
    """A text part of a :class:`_Substitution` whose static text is plain ASCII, written per
    row as bytes: what :func:`mime.text_part` would write, without encoding, normalising and
    measuring the whole text again for every row.

    The static pieces are given CRLF line breaks once, and the part's head; a row is one
    join (see :func:`_slots`) and one encode. A row takes this path only
    when its values cannot change what :func:`mime.text_part` decides: plain ASCII without
    CR, LF or NUL (so the part stays 7bit and every line break is a static one), and short
    enough that no line can pass :data:`mime.LONGEST_LINE` (the longest static line plus
    every value's length). Otherwise :meth:`__call__` returns None and the caller writes the
    part the general way. The tests compare both ways' bytes.
    """

    def __init__(self, texts: list[str], longest: int, dots: bool, starts: list[int]) -> None:
        # texts: the part's head then its text, in pieces, ASCII with CRLF breaks.
        self._slots, self._longest = _slots(texts), longest
        self._dots, self._starts = dots, starts
        #: Ready for DATA whatever the values (no value begins a line): no per-row check.
        self.always_ready = not dots and not starts

    def ready(self, values: list[str]) -> bool:
        """Whether the part written from ``values`` has no line beginning with a dot, so
        that the message can go after DATA unstuffed (:class:`DataReady`): no static line
        does, and each value that begins a line is not empty and does not begin with one.
        (The part is 7-bit ASCII with CRLF breaks whenever :meth:`__call__` writes it.)"""
        if self._dots:
            return False
        for index in self._starts:
            value = values[index]
            if not value or value[0] == ".":
                return False
        return True

    @classmethod
    def of(cls, template: _Substitution, subtype: bytes) -> _PlainPart | None:
        texts = template.texts
        static = "".join(texts)
        if not static.isascii() or "\x00" in static or not texts[-1]:
            return None  # non-ASCII or NUL: encoded; a value last: it decides the final break
        texts = [text.replace("\r\n", "\n") for text in texts]
        if any("\r" in text for text in texts):
            return None  # a lone CR: normalised with what follows it, maybe a value
        if not texts[-1].endswith("\n"):
            texts[-1] += "\n"  # the text always ends with a line break (mime.text_part)
        lines = "".join(texts).split("\n")
        # Where a line begins: at the start of the text and after each break. A static line
        # beginning with a dot needs stuffing whatever the values; a value that begins a line
        # is checked per row (see ready), and as it must then be non-empty, what follows it
        # on that line does not begin one.
        dots, starts, at_start = False, [], True
        for index, text in enumerate(texts):
            if text:
                dots |= (at_start and text[0] == ".") or "\n." in text
                at_start = text[-1] == "\n"
            if index < len(texts) - 1:
                if at_start:
                    starts.append(index)
                at_start = False
        head = (
            f'Content-Type: text/{subtype.decode("ascii")}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: 7bit\r\n\r\n"
        )
        pieces = [text.replace("\n", "\r\n") for text in texts]
        pieces[0] = head + pieces[0]
        return cls(pieces, max(map(len, lines)), dots, starts)

    def __call__(self, values: list[str]) -> bytes | None:
        joined = "".join(values)
        if (
            not joined.isascii()
            or len(joined) + self._longest > mime.LONGEST_LINE
            or "\n" in joined
            or "\r" in joined
            or "\x00" in joined
        ):
            return None
        out = self._slots.copy()  # see _slots
        out[1::2] = values
        return "".join(out).encode("ascii")


def _compile(source: str | None, *, html: bool) -> Render | None:
    """A renderer for a Jinja source: plain substitution where it suffices, else Jinja."""
    if source is None:
        return None
    if (simple := _Substitution.of(source, html=html)) is not None:
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


def _header(name: str, value: str, *, utf8: bool = False) -> bytes:
    """One unstructured header line from text that is not trusted yet."""
    if (
        value.isascii()
        and value.isprintable()  # in ASCII: no control character, no DEL
        and len(name) + len(value) < 76
        and "=?" not in value
        and "  " not in value
    ):
        return f"{name}: {value}\r\n".encode("ascii")  # what the checks below would write
    if has_control_chars(value):
        raise FluxMailException(
            f"{name} contains a line break or control character", "invalid_params"
        )
    check_header_text(value, name)  # an encoded word would be decoded, and could inject
    return mime.text_header(name, value, utf8=utf8)


def _address_header(name: str, value: str) -> tuple[bytes, str]:
    """The header line for an address and its envelope form."""
    if _PLAIN_ADDRESS.fullmatch(value) and len(value) < 70:
        return f"{name}: {value}\r\n".encode("ascii"), value
    address = parse_address(value, role=_ROLES.get(name, name))
    utf8 = not address.username.isascii()
    return mime.address_header(name, [address], utf8=utf8), address.addr_spec


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
        for name, value in custom_headers(headers):
            static.append(mime.header(name, text_words(value, utf8=False)))
        static.append(mime.MIME_VERSION)
        self._static = b"".join(static)
        self._subject = _compile(subject, html=False)
        self._text = _compile(text, html=False)
        self._html = _compile(html, html=True)
        self._text_part = _plain_part(self._text, b"plain")
        self._html_part = _plain_part(self._html, b"html")
        self._unsubscribe = _compile(unsubscribe_url, html=False)
        self._sign = sign
        self._domain = domain or self.sender.rpartition("@")[2]
        token = secrets.token_hex(12)
        self._alternative = f"alt-{token}".encode("ascii")
        self._mixed = f"mix-{token}".encode("ascii")
        self._attachments = [self._attachment_part(path) for path in attachments]
        # One compiled text part and nothing else: render writes it without _body's calls.
        self._single: tuple[_Substitution, _PlainPart] | None = None
        compiled, plain = self._text, self._text_part
        if isinstance(compiled, _Substitution) and plain and not (self._html or self._attachments):
            self._single = (compiled, plain)
        self._static_ready = _ready(self._static)
        self._attachments_ready = all(map(_ready, self._attachments))

    @staticmethod
    def _attachment_part(path: str | Path) -> bytes:
        item = read_file(path, what="Attachment")
        return mime.file_part(item.content, item.mime_type, item.filename)

    def render(self, to: str | Sequence[str], /, **context: Any) -> tuple[Envelope, bytes]:
        """The envelope and wire bytes of the message for ``to``, rendered with ``context``."""
        if isinstance(to, str):
            to_line, address = _address_header("To", to)
            addresses: tuple[str, ...] = (address,)
        else:
            if not to:
                raise FluxMailException("recipients must be a non-empty list", "invalid_params")
            parsed = [parse_address(r, role="recipient") for r in to]
            utf8 = any(not a.username.isascii() for a in parsed)
            to_line = mime.address_header("To", parsed, utf8=utf8)
            addresses = tuple(a.addr_spec for a in parsed)
        assert self._subject is not None
        subject = self._subject(context)
        if not subject.strip():
            raise FluxMailException("The rendered subject is empty", "invalid_params")
        subject_line = _header("Subject", subject)
        # The header lines made per row may come from the general writers (an address or a
        # subject that needs encoding): checked before the message is marked DataReady. The
        # writers fold with leading blanks, so this is for the 8-bit check, in effect.
        per_row = to_line + subject_line  # whole lines, each beginning with its name
        ready = self._static_ready and per_row.isascii() and per_row.find(b"\n.") < 0
        head = [self._static, to_line, subject_line, mime.date_line()]
        head.append(f"Message-ID: {mime.message_id(self._domain)}\r\n".encode())
        if self._unsubscribe is not None:
            url = self._unsubscribe(context)
            if has_control_chars(url):
                raise FluxMailException(
                    "unsubscribe_url contains a line break or control character",
                    "invalid_params",
                )
            lines = unsubscribe_headers(check_header_text(url, "unsubscribe_url"))
            ready = ready and all(map(_line_ready, lines))
            head += lines
        single = self._single
        if single is not None and (part := single[1](values := single[0].values(context))):
            # _body's common case (one compiled text part, nothing else) without its calls.
            body, body_ready = part, single[1].always_ready or single[1].ready(values)
        else:
            body, body_ready = self._body(context)
        head.append(body)
        # One join, then the marker type (a copy; joining into a subclass is not possible).
        data: bytes = (DataReady if ready and body_ready else CRLFBytes)(b"".join(head))
        if self._sign is not None:
            data = self._sign(data)
        return plain_envelope(self.sender, addresses), data  # addresses: one at least

    def _body(self, context: Mapping[str, Any]) -> tuple[bytes, bool]:
        """The message's content, and whether it is ready for DATA as it is (see
        :class:`DataReady`; the multipart lines between the parts always are)."""
        parts = []
        ready = True
        if self._text is not None:
            part, part_ready = _write_part(self._text, self._text_part, b"plain", context)
            parts.append(part)
            ready = part_ready
        if self._html is not None:
            part, part_ready = _write_part(self._html, self._html_part, b"html", context)
            parts.append(part)
            ready = ready and part_ready
        if len(parts) == 1:
            content = parts[0]
        else:
            content = mime.multipart(b"alternative", parts, self._alternative)
        if not self._attachments:
            return content, ready
        content = mime.multipart(b"mixed", [content], self._mixed, static=self._attachments)
        return content, ready and self._attachments_ready


def _plain_part(render: Render | None, subtype: bytes) -> _PlainPart | None:
    return _PlainPart.of(render, subtype) if isinstance(render, _Substitution) else None


def _write_part(
    render: Render, plain: _PlainPart | None, subtype: bytes, context: Mapping[str, Any]
) -> tuple[bytes, bool]:
    """One text part of a rendered message: from the compiled pieces where they serve; and
    whether it is ready for DATA as it is (known only on that path)."""
    if plain is not None:
        assert isinstance(render, _Substitution)
        values = render.values(context)
        if (part := plain(values)) is not None:
            return part, plain.always_ready or plain.ready(values)
    return mime.text_part(render(context), subtype), False


def _ready(data: bytes) -> bool:
    """Whether ``data`` (whole lines) may go after DATA as it is: see :class:`DataReady`."""
    # find(), not ``in``: for bytes, ``in`` first tries the operand as an integer and raises
    # and clears a TypeError before it searches (most of the cost for a short line).
    return data.isascii() and not data.startswith(b".") and data.find(b"\n.") < 0


def _line_ready(line: bytes) -> bool:
    """:func:`_ready` for a header line (which begins with its name, never a dot)."""
    return line.isascii() and line.find(b"\n.") < 0
