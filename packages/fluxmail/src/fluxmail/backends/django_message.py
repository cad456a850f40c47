"""A Django ``EmailMessage`` written by FluxMail's one MIME writer (:mod:`fluxmail.mime`).

:class:`~fluxmail.backends.django.FluxMailBackend` sends what :func:`wire_bytes` writes: the
message Django's own ``message()`` would build, field for field, written as bytes without the
``email`` package. What Django users rely on holds: ``EmailMessage`` and
``EmailMultiAlternatives`` (the body, then its alternatives, in ``alternative_subtype``),
attachments (``attach()``, ``attach_file()``, ``(filename, content, mimetype)`` tuples, and
``MIMEBase`` objects, which are the caller's own parts and written as they flatten),
``mixed_subtype``, ``content_subtype``, ``cc``/``reply_to`` headers (``bcc`` never in the
data), ``extra_headers`` (their ``From``/``To``/``Cc``/``Reply-To`` replace what is shown;
``Date`` and ``Message-ID`` replace Django's; any other is added), ``EMAIL_USE_LOCALTIME``,
and Django's checks: an address ``sanitize_address`` refuses, or a line break in a header, is
the ``ValueError`` (``BadHeaderError``) Django raises.

Differences that are only in the encoding: text goes as 7bit, quoted-printable or base64,
whichever fits (Django writes 8bit UTF-8), and a header's non-ASCII text as RFC 2047 words
folded between words.

What the writer cannot express goes through Django's ``message()`` as before, each for a
stated reason (:class:`Unsupported`, logged at DEBUG on ``fluxmail.backends.django``): a
charset other than UTF-8 (the writer writes UTF-8 only), a subclass that overrides how Django
builds its message (its override must run), a ``message/rfc822`` attachment or a non-text
alternative, a content type or header name that is not a plain token.
"""

from __future__ import annotations

import email.utils
import io
import mimetypes
import re
from collections.abc import Iterable, Sequence
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import Message
from typing import Any

from django.conf import settings
from django.core.mail.message import (
    ADDRESS_HEADERS,
    BadHeaderError,
    EmailMessage,
    EmailMultiAlternatives,
    sanitize_address,
)
from django.core.mail.utils import DNS_NAME

from fluxmail import mime
from fluxmail.errors import FluxMailException
from fluxmail.folding import encoded_words
from fluxmail.protocol.commands import has_control_chars
from fluxmail.protocol.data import CRLFBytes

__all__ = ["Unsupported", "wire_bytes"]

CRLF = b"\r\n"
_UTF8 = frozenset({"utf-8", "utf8"})
_TOKEN = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}$")  # RFC 2045 token, short
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext
#: Django's methods that decide what ``message()`` builds: overridden in a subclass, they
#: must run, so such a message keeps Django's builder.
_BUILDERS = (
    "message",
    "_create_message",
    "_create_attachments",
    "_create_attachment",
    "_create_mime_attachment",
    "_create_alternatives",
    "_set_list_header_if_not_empty",
)


class Unsupported(Exception):  # noqa: N818 - a reason, not an error anyone sees
    """Why a message goes through Django's ``message()`` instead of FluxMail's writer."""


def wire_bytes(message: EmailMessage) -> bytes:
    """The message as bytes on the wire (CRLF), written by :mod:`fluxmail.mime`.

    Raises :class:`Unsupported` for what the writer cannot express (the caller then uses
    Django's builder), Django's ``ValueError``/``BadHeaderError`` for what Django refuses.
    """
    _check_supported(message)
    encoding = message.encoding or settings.DEFAULT_CHARSET
    if str(encoding).lower() not in _UTF8:
        raise Unsupported(f"the message's charset is {encoding!r}; FluxMail writes UTF-8 only")
    extra = {str(name): value for name, value in message.extra_headers.items()}
    lowered = {name.lower(): name for name in extra}
    for name in extra:
        if not _FIELD_NAME.match(name):
            raise Unsupported(f"the header name {name!r} is not a plain field name")
    head = [_subject(message.subject)]
    head.append(_addresses("From", [extra.get(lowered.get("from", ""), message.from_email)]))
    lists = (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to))
    for field, values in lists:
        if field.lower() in lowered:  # shown as given, as Django does; the envelope is not
            head.append(_addresses(field, [extra[lowered[field.lower()]]]))
        elif values:
            head.append(_addresses(field, list(values)))
    if "date" not in lowered:
        date = email.utils.formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
        head.append(f"Date: {date}\r\n".encode())
    if "message-id" not in lowered:
        head.append(f"Message-ID: {mime.message_id(str(DNS_NAME))}\r\n".encode())
    for name, value in extra.items():
        if name.lower() not in ("from", "to", "cc", "reply-to"):
            head.append(_extra_header(name, value))
    head.append(mime.MIME_VERSION)
    return CRLFBytes(b"".join(head) + _content(message))


def _check_supported(message: EmailMessage) -> None:
    cls = type(message)
    base = EmailMultiAlternatives if isinstance(message, EmailMultiAlternatives) else EmailMessage
    for name in _BUILDERS:
        if getattr(cls, name, None) is not getattr(base, name, None):
            raise Unsupported(f"{cls.__name__} overrides {name}(), which must run")


# -- headers ----------------------------------------------------------------------------------


def _one_line(name: str, value: object) -> str:
    text = str(value)  # Django takes lazy strings and other values and writes their str()
    if "\n" in text or "\r" in text:
        # Django's own error and message, which code written for it catches.
        raise BadHeaderError(
            f"Header values can't contain newlines (got {text!r} for header {name!r})"
        )
    if has_control_chars(text):
        raise BadHeaderError(f"Header values can't contain control characters (header {name!r})")
    return text


def _unstructured(name: str, text: str) -> bytes:
    if "=?" in text:
        # Text that looks like an encoded word is written encoded, so it reads back as the
        # very text given, never decoded into something else.
        return mime.header(name, encoded_words(text))
    return mime.text_header(name, text)


def _subject(subject: object) -> bytes:
    return _unstructured("Subject", _one_line("Subject", subject))


def _extra_header(name: str, value: object) -> bytes:
    text = _one_line(name, value)
    if name.lower() in ADDRESS_HEADERS:
        return _addresses(name, [text])
    return _unstructured(name, text)


def _addresses(name: str, values: Sequence[object]) -> bytes:
    """An address header from Django's values: each checked (and IDNA-encoded) by Django's
    ``sanitize_address``, written by FluxMail (display names encoded as needed)."""
    encoding = settings.DEFAULT_CHARSET
    written: list[str | Address] = []
    for value in values:
        for display, raw in _split(name, value):
            try:
                sanitized = sanitize_address((display, raw) if display else raw, encoding)
            except ValueError as exc:
                raise FluxMailException(str(exc), "invalid_email") from exc
            spec = email.utils.parseaddr(sanitized)[1] or raw
            written.append(Address(display_name=display, addr_spec=spec) if display else spec)
    return mime.address_header(name, written)


def _split(name: str, value: object) -> Iterable[tuple[str, str]]:
    """``(display name, address)`` pairs from one of Django's address values: a string
    (possibly a list, for an extra header) or a ``(name, address)`` pair."""
    if isinstance(value, tuple) and len(value) == 2:
        return [(_one_line(name, value[0]), _one_line(name, value[1]))]
    text = _one_line(name, value)
    pairs = email.utils.getaddresses([text])
    if not pairs or any(not address for _display, address in pairs):
        return [("", text)]  # sanitize_address says what is wrong with it
    return pairs


# -- content ----------------------------------------------------------------------------------


def _content(message: EmailMessage) -> bytes:
    """The body, its alternatives and the attachments, nested as Django nests them."""
    body = str(message.body)
    subtype = _token(message.content_subtype, "content_subtype")
    content = mime.text_part(body, subtype)
    multipart = False
    alternatives = getattr(message, "alternatives", None) or []
    if alternatives:
        parts = [content] if body else []
        parts += [_alternative(item) for item in alternatives]
        kind = _token(getattr(message, "alternative_subtype", "alternative"), "subtype")
        content, multipart = mime.multipart(kind, parts), True
    if message.attachments:
        parts = [content] if body or multipart else []
        parts += [_attachment(item) for item in message.attachments]
        mixed = getattr(message, "mixed_subtype", "mixed")
        content = mime.multipart(_token(mixed, "mixed_subtype"), parts)
    return content


def _token(value: object, what: str) -> bytes:
    text = str(value)
    if not _TOKEN.match(text):
        raise Unsupported(f"{what} {text!r} is not a plain MIME token")
    return text.encode("ascii")


def _mime_type(value: object) -> tuple[bytes, bytes]:
    text = str(value)
    base, _, sub = text.partition("/")
    if not _TOKEN.match(base) or not _TOKEN.match(sub):
        raise Unsupported(f"the content type {text!r} is not type/subtype")
    return base.lower().encode("ascii"), sub.encode("ascii")


def _alternative(item: Any) -> bytes:
    content, mimetype = item[0], item[1]
    base, sub = _mime_type(mimetype)
    if base != b"text" or not isinstance(content, str):
        raise Unsupported(f"an alternative of type {mimetype!r} that is not text")
    return mime.text_part(content, sub)


def _attachment(item: Any) -> bytes:
    if isinstance(item, Message):
        return _flattened(item)
    filename, content, mimetype = item[0], item[1], item[2] if len(item) > 2 else None
    if not mimetype:
        guessed = mimetypes.guess_type(filename)[0] if filename else None
        mimetype = guessed or "application/octet-stream"
    base, sub = _mime_type(mimetype)
    if base == b"message":
        raise Unsupported("a message/* attachment (Django attaches it as a parsed message)")
    if base == b"text" and isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            base, sub = b"application", b"octet-stream"  # as Django's attach() does
    disposition = b""
    if filename:
        filename = _one_line("Content-Disposition", filename)
        disposition = mime.header(
            "Content-Disposition", ["attachment;", *mime.filename_params(filename)]
        )
    if base == b"text":
        return disposition + mime.text_part(str(content), sub)
    data = content if isinstance(content, bytes) else str(content).encode("utf-8")
    return (
        b"Content-Type: " + base + b"/" + sub + CRLF
        + b"Content-Transfer-Encoding: base64" + CRLF
        + disposition + CRLF + mime.wrap_base64(data) + CRLF
    )  # fmt: skip


def _flattened(part: Message) -> bytes:
    """A caller's own ``MIMEBase`` part, written as it flattens (with CRLF line breaks)."""
    buffer = io.BytesIO()
    policy = part.policy.clone(linesep="\r\n")
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(part)
    data = buffer.getvalue()
    return data if data.endswith(CRLF) else data + CRLF
