"""Building the MIME message for ``FluxMail.create()``: validation first, then assembly.

Everything a caller passes is checked before anything is built, so a bad argument gives a
:class:`FluxMailException` with the contract's code and never a half-built or injected message.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid
from pathlib import Path

from fluxmail.addresses import check_header_text, parse_address, parse_addresses
from fluxmail.errors import FluxMailException
from fluxmail.folding import address_words, fold, text_words
from fluxmail.protocol.commands import Envelope, has_control_chars

#: CRLF line endings, no line longer than 998 octets, RFC 2047 for non-ASCII headers.
#: SMTP line endings; the headers FluxMail writes already folded (folding.py) stay as written.
WIRE_POLICY = policy.SMTP.clone(refold_source="none")

PRIORITIES = {"high": ("1", "High"), "normal": ("3", "Normal"), "low": ("5", "Low")}


@dataclass(frozen=True)
class Attachment:
    path: Path
    content: bytes
    mime_type: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class Draft:
    """A validated message: its MIME form, its envelope, and the checked fields it came from.

    Bcc lives only in the envelope (and ``bcc``), never in ``message``. The fields serve
    senders that do not speak MIME (Outlook).
    """

    message: EmailMessage
    envelope: Envelope
    subject: str
    sender: str | None
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: str | None = None
    priority: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    inline_images: dict[str, Attachment] = field(default_factory=dict)

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=self.message.policy)

    def preview(self) -> str:
        """The message as it will be sent, plus the envelope's Bcc recipients for reference."""
        text = self.message.as_string(policy=self.message.policy.clone(linesep="\n"))
        if self.bcc:
            text = f"X-FluxMail-Bcc (envelope only, not sent): {', '.join(self.bcc)}\n{text}"
        return text


def _require_list(value: object, name: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise FluxMailException(
            f"{name} must be a list, got {type(value).__name__}", "invalid_params"
        )
    return list(value)


def _set_addresses(msg: EmailMessage, name: str, addresses: list[Address], *, utf8: bool) -> None:
    msg.set_raw(name, fold(name, address_words(addresses, utf8=utf8)))


def _header_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise FluxMailException(f"{name} must be a string", "invalid_params")
    if has_control_chars(value):
        raise FluxMailException(
            f"{name} contains a line break or control character; headers must be one line",
            "invalid_params",
        )
    return check_header_text(value, name)


#: Headers FluxMail writes itself (from create()'s arguments), and the ones the email package
#: parses as structured fields: never from ``headers=``.
RESERVED_HEADERS = frozenset(HeaderRegistry().registry) | frozenset(
    h.lower()
    for h in (
        "From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID",
        "In-Reply-To", "References", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "List-Unsubscribe",
        "List-Unsubscribe-Post", "Return-Path", "Received", "DKIM-Signature", "X-Priority",
        "X-MSMail-Priority", "Importance",
    )
)  # fmt: skip
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext


def _custom_headers(headers: object) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        raise FluxMailException("headers must be a dict of name: value", "invalid_params")
    checked = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise FluxMailException(
                f"Header name {name!r} is not a valid field name (printable ASCII, no colon "
                "or space)",
                "invalid_params",
            )
        if name.lower() in RESERVED_HEADERS:
            raise FluxMailException(
                f"Header {name} is set from create()'s own arguments; it cannot be passed in "
                "headers=",
                "invalid_params",
            )
        checked.append((name, _header_text(value, f"header {name}")))
    return checked


def read_file(path: object, *, what: str) -> Attachment:
    """Read an attachment or inline image, with the contract's codes for each failure."""
    if not isinstance(path, str | Path):
        raise FluxMailException(f"{what} must be a file path, got {path!r}", "invalid_params")
    # Absolute now, so a later chdir (or Outlook's own working directory) cannot change it.
    file = Path(path).absolute()
    if not file.is_file():
        raise FluxMailException(f"{what} not found: {file}", "attachment_not_found")
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise FluxMailException(f"Could not read {what} {file}: {exc}", "read_error") from exc
    mime_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return Attachment(file, content, mime_type)


def inline_css(html: str) -> str:
    try:
        import css_inline  # optional dependency, imported only when asked for
    except ImportError as exc:
        raise FluxMailException(
            "inline_css=True needs the css-inline package: pip install 'fluxmail[css]'",
            "css_inline_failed",
        ) from exc
    try:
        return str(css_inline.inline(html))
    except Exception as exc:
        raise FluxMailException(f"Could not inline CSS: {exc}", "css_inline_failed") from exc


@dataclass
class MessageSpec:
    """The arguments of ``create()``, exactly as the caller gave them (not yet trusted)."""

    subject: object
    recipients: object
    body: object
    sender: object = None
    cc: object = None
    bcc: object = None
    reply_to: object = None
    attachments: object = None
    html_body: bool = False
    plain_body: object = None
    in_reply_to: object = None
    references: object = None
    priority: object = None
    unsubscribe_url: object = None
    inline_images: object = None
    inline_css: bool = False
    headers: Mapping[str, str] | None = None
    dsn_notify: tuple[str, ...] = ()
    dsn_ret: str | None = None
    dsn_envid: str | None = None


def build(spec: MessageSpec, *, id_domain: str | None = None) -> Draft:
    """Validate ``spec`` and assemble the message; raises FluxMailException on bad input.

    ``id_domain`` names the Message-ID's domain (default: the sender's). Without a sender
    (Outlook picks its own account) the message has no From header.
    """
    if not isinstance(spec.subject, str) or not spec.subject.strip():
        raise FluxMailException("subject must be a non-empty string", "invalid_params")
    subject = _header_text(spec.subject, "subject")
    if not isinstance(spec.recipients, list | tuple) or not spec.recipients:
        raise FluxMailException("recipients must be a non-empty list", "invalid_params")
    cc = _require_list(spec.cc, "cc")
    bcc = _require_list(spec.bcc, "bcc")
    attachments = _require_list(spec.attachments, "attachments")
    images = spec.inline_images
    if images is not None and (not isinstance(images, dict) or not spec.html_body):
        raise FluxMailException(
            "inline_images must be a dict of {cid: path} and needs html_body=True",
            "invalid_params",
        )
    if not isinstance(spec.body, str):
        raise FluxMailException("body must be a string", "invalid_params")
    priority = spec.priority
    if priority is not None and (
        not isinstance(priority, str) or priority.lower() not in PRIORITIES
    ):
        raise FluxMailException(
            f"priority must be one of high, normal, low; got {priority!r}", "invalid_priority"
        )

    to_addrs = parse_addresses(list(spec.recipients), role="recipient")
    cc_addrs = parse_addresses(cc, role="cc address")
    bcc_addrs = parse_addresses(bcc, role="bcc address")
    sender = None if spec.sender is None else parse_address(spec.sender, role="sender")
    reply_to = None if spec.reply_to is None else parse_address(spec.reply_to, role="reply_to")

    everyone = [*to_addrs, *cc_addrs, *bcc_addrs, *(a for a in (sender, reply_to) if a)]
    # A non-ASCII local part can only travel as SMTPUTF8 (RFC 6531): UTF-8 headers, and the
    # transport refuses the send if the server lacks the extension.
    utf8 = any(not a.username.isascii() for a in everyone)
    msg = EmailMessage(policy=WIRE_POLICY.clone(utf8=True) if utf8 else WIRE_POLICY)
    # Addresses and text are folded here, not by the email package (see folding.py).
    if sender is not None:
        _set_addresses(msg, "From", [sender], utf8=utf8)
    _set_addresses(msg, "To", to_addrs, utf8=utf8)
    if cc_addrs:
        _set_addresses(msg, "Cc", cc_addrs, utf8=utf8)
    if reply_to is not None:
        _set_addresses(msg, "Reply-To", [reply_to], utf8=utf8)
    msg.set_raw("Subject", fold("Subject", text_words(subject, utf8=utf8)))
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = make_msgid(domain=id_domain or _id_domain(sender))
    _threading_headers(msg, spec.in_reply_to, spec.references)
    if isinstance(priority, str):
        number, word = PRIORITIES[priority.lower()]
        msg["X-Priority"] = number
        msg["X-MSMail-Priority"] = word
        msg["Importance"] = word
    if spec.unsubscribe_url is not None:
        url = _header_text(spec.unsubscribe_url, "unsubscribe_url")
        if not url.lower().startswith("https://") or any(c in url for c in " <>"):
            raise FluxMailException(
                "unsubscribe_url must be an https:// URL (RFC 8058 one-click)", "invalid_params"
            )
        msg["List-Unsubscribe"] = f"<{url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in _custom_headers(spec.headers):
        msg.set_raw(name, fold(name, text_words(value, utf8=utf8)))

    text, html, inline = _set_body(msg, spec, images or {})
    files = [read_file(path, what="Attachment") for path in attachments]
    for item in files:
        maintype, _, subtype = item.mime_type.partition("/")
        msg.add_attachment(item.content, maintype, subtype, filename=item.filename)

    envelope = Envelope(
        sender.addr_spec if sender else "",
        tuple(a.addr_spec for a in (*to_addrs, *cc_addrs, *bcc_addrs)),
        spec.dsn_notify,
        spec.dsn_ret,
        spec.dsn_envid,
    )
    return Draft(
        msg,
        envelope,
        subject=subject,
        sender=None if sender is None else str(sender),
        to=[str(a) for a in to_addrs],
        cc=[str(a) for a in cc_addrs],
        bcc=[a.addr_spec for a in bcc_addrs],
        reply_to=None if reply_to is None else str(reply_to),
        priority=priority.lower() if isinstance(priority, str) else None,
        text=text,
        html=html,
        attachments=files,
        inline_images=inline,
    )


def _id_domain(sender: Address | None) -> str:
    if sender is None:
        return "fluxmail.invalid"
    try:
        return sender.domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "fluxmail.invalid"


def _threading_headers(msg: EmailMessage, in_reply_to: object, references: object) -> None:
    if in_reply_to is not None:
        msg["In-Reply-To"] = _header_text(in_reply_to, "in_reply_to")
    if references is not None:
        refs = references if isinstance(references, list | tuple) else [references]
        msg["References"] = " ".join(_header_text(r, "references") for r in refs)


def _transfer_encoding(text: str) -> str | None:
    """7-bit safe encoding for non-ASCII text, so no relay needs 8BITMIME to carry it.

    ASCII is left to the email package (7bit, or quoted-printable for over-long lines).
    """
    if "\x00" in text:  # NUL is never allowed raw, not even in 8bit (RFC 2045 2.7)
        return "quoted-printable"
    if text.isascii():
        return None
    wide = sum(not ch.isascii() for ch in text)
    return "base64" if wide * 3 > len(text) else "quoted-printable"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode_text(text: str, what: str) -> str:
    """``text``, unless it holds a lone surrogate (half of a UTF-16 pair, what a bad decode
    such as ``errors="surrogateescape"`` leaves behind), which no charset can encode."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise FluxMailException(
            f"{what} contains a lone surrogate (U+{ord(found.group()):04X}) at position "
            f"{found.start()}: it is not valid Unicode text; decode the source correctly "
            "(or with errors='replace') before sending it",
            "invalid_params",
        )
    return text


def _set_body(
    msg: EmailMessage, spec: MessageSpec, images: Mapping[object, object]
) -> tuple[str | None, str | None, dict[str, Attachment]]:
    """Fill in the body parts; returns the text, the final HTML and the inline images."""
    body = _unicode_text(str(spec.body), "body")
    if not spec.html_body:
        msg.set_content(body, cte=_transfer_encoding(body))
        return body, None, {}
    text = None
    html = inline_css(body) if spec.inline_css else body
    if spec.plain_body is not None:
        if not isinstance(spec.plain_body, str):
            raise FluxMailException("plain_body must be a string", "invalid_params")
        text = _unicode_text(spec.plain_body, "plain_body")
        msg.set_content(text, cte=_transfer_encoding(text))
        msg.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
        html_part = next(
            part for part in msg.iter_parts() if part.get_content_type() == "text/html"
        )
        assert isinstance(html_part, EmailMessage)
    else:
        msg.set_content(html, subtype="html", cte=_transfer_encoding(html))
        html_part = msg
    inline: dict[str, Attachment] = {}
    for cid, path in images.items():
        name = _header_text(cid, "inline image cid")
        item = inline[name] = read_file(path, what="Inline image")
        maintype, _, subtype = item.mime_type.partition("/")
        html_part.add_related(
            item.content,
            maintype,
            subtype,
            cid=f"<{name}>",
            disposition="inline",
            filename=item.filename,
        )
    return text, html, inline
