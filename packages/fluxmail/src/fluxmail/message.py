"""Building the message for ``FluxMail.create()``: validation first, then the bytes.

Everything a caller passes is checked before anything is built, so a bad argument gives a
:class:`FluxMailException` with the contract's code and never a half-built or injected message.
The message itself is written by :mod:`fluxmail.mime`, the one writer every path shares.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address, HeaderRegistry
from functools import lru_cache
from pathlib import Path

from fluxmail import mime
from fluxmail.addresses import check_header_text, parse_address
from fluxmail.errors import FluxMailException
from fluxmail.folding import text_words
from fluxmail.protocol.commands import Envelope, has_control_chars
from fluxmail.protocol.data import CRLFBytes

#: A mailbox as the builder carries it: a bare ASCII address (``user@example.com``, checked by
#: ``_SIMPLE_ADDRESS``) as the string itself, or a parsed ``Address`` (display name,
#: non-ASCII, IDNA). ``str()`` of either is the mailbox as written in a header.
Mailbox = str | Address

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
    """A validated message: its wire bytes, its envelope, and the checked fields it came from.

    Bcc lives only in the envelope (and ``bcc``), never in ``data``. The fields serve senders
    that do not speak MIME (Outlook); their addresses are :data:`Mailbox` values.
    """

    data: bytes
    envelope: Envelope
    subject: str
    from_address: Mailbox | None
    to_addresses: list[Mailbox]
    cc_addresses: list[Mailbox] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to_address: Mailbox | None = None
    priority: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    inline_images: dict[str, Attachment] = field(default_factory=dict)
    #: ``data`` DKIM-signed by the mailer that sends it (signed once, on first use).
    signed: bytes | None = None

    @property
    def sender(self) -> str | None:
        """``Name <address>`` of the From, or None (Outlook's default account)."""
        return None if self.from_address is None else str(self.from_address)

    @property
    def to(self) -> list[str]:
        return [str(a) for a in self.to_addresses]

    @property
    def cc(self) -> list[str]:
        return [str(a) for a in self.cc_addresses]

    @property
    def reply_to(self) -> str | None:
        return None if self.reply_to_address is None else str(self.reply_to_address)

    def as_bytes(self) -> bytes:
        """The message exactly as it goes on the wire (before DKIM signing, if any)."""
        return self.data

    def preview(self) -> str:
        """The message bytes as text (CRLF shown as a newline)."""
        return preview(self.data)


def preview(data: bytes) -> str:
    """Wire bytes as text: UTF-8 (SMTPUTF8 headers read as written), CRLF as newline."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


def _require_list(value: object, name: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise FluxMailException(
            f"{name} must be a list, got {type(value).__name__}", "invalid_params"
        )
    return list(value)


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


def custom_headers(headers: object) -> list[tuple[str, str]]:
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


@dataclass(kw_only=True, slots=True)
class MessageSpec:
    """The arguments of ``create()``, typed as documented but not yet trusted: :func:`build`
    checks every field at run time (a caller may pass anything).

    Not frozen: a frozen dataclass sets each of its 20 fields through ``object.__setattr__``,
    a tenth of ``create()``'s instructions; nothing keeps a spec after :func:`build`.
    """

    subject: str
    recipients: list[str]
    body: str
    sender: str | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    reply_to: str | None = None
    attachments: list[str] | None = None
    html_body: bool = False
    plain_body: str | None = None
    in_reply_to: str | None = None
    references: str | list[str] | None = None
    priority: str | None = None
    unsubscribe_url: str | None = None
    inline_images: dict[str, str] | None = None
    inline_css: bool = False
    headers: Mapping[str, str] | None = None
    dsn_notify: tuple[str, ...] = ()
    dsn_ret: str | None = None
    dsn_envid: str | None = None


def build(spec: MessageSpec, *, id_domain: str | None = None) -> Draft:
    """Validate ``spec`` and write the message; raises FluxMailException on bad input.

    ``id_domain`` names the Message-ID's domain (default: the sender's). Without a sender
    (Outlook picks its own account) the message has no From header.
    """
    subject_value: object = spec.subject
    if not isinstance(subject_value, str) or not subject_value.strip():
        raise FluxMailException("subject must be a non-empty string", "invalid_params")
    subject = _header_text(subject_value, "subject")
    recipients: object = spec.recipients
    if not isinstance(recipients, list | tuple) or not recipients:
        raise FluxMailException("recipients must be a non-empty list", "invalid_params")
    cc = _require_list(spec.cc, "cc")
    bcc = _require_list(spec.bcc, "bcc")
    attachments = _require_list(spec.attachments, "attachments")
    images: object = spec.inline_images
    if images is not None and (not isinstance(images, dict) or not spec.html_body):
        raise FluxMailException(
            "inline_images must be a dict of {cid: path} and needs html_body=True",
            "invalid_params",
        )
    body: object = spec.body
    if not isinstance(body, str):
        raise FluxMailException("body must be a string", "invalid_params")
    priority: object = spec.priority
    if priority is not None and (
        not isinstance(priority, str) or priority.lower() not in PRIORITIES
    ):
        raise FluxMailException(
            f"priority must be one of high, normal, low; got {priority!r}", "invalid_priority"
        )

    to_addrs = [_address(value, "recipient") for value in recipients]
    cc_addrs = [_address(value, "cc address") for value in cc]
    bcc_addrs = [_address(value, "bcc address") for value in bcc]
    sender = None if spec.sender is None else _repeated_address(spec.sender, "sender")
    reply_to = None if spec.reply_to is None else _repeated_address(spec.reply_to, "reply_to")

    # A non-ASCII local part can only travel as SMTPUTF8 (RFC 6531): UTF-8 headers, and the
    # transport refuses the send if the server lacks the extension.
    utf8 = (
        _needs_utf8(to_addrs)
        or _needs_utf8(cc_addrs)
        or _needs_utf8(bcc_addrs)
        or _needs_utf8((sender, reply_to))
    )
    head: list[bytes] = []
    if sender is not None:
        head.append(_from_line(sender, utf8))
    head.append(mime.address_header("To", to_addrs, utf8=utf8))
    if cc_addrs:
        head.append(mime.address_header("Cc", cc_addrs, utf8=utf8))
    if reply_to is not None:
        head.append(mime.address_header("Reply-To", [reply_to], utf8=utf8))
    head.append(mime.text_header("Subject", subject, utf8=utf8))
    head.append(mime.date_line())
    message_id = mime.message_id(id_domain or _id_domain(sender))
    head.append(f"Message-ID: {message_id}\r\n".encode("ascii"))
    head += _threading_headers(spec.in_reply_to, spec.references, utf8=utf8)
    if isinstance(priority, str):
        number, word = PRIORITIES[priority.lower()]
        head.append(
            f"X-Priority: {number}\r\nX-MSMail-Priority: {word}\r\nImportance: {word}\r\n".encode(
                "ascii"
            )
        )
    if spec.unsubscribe_url is not None:
        head += unsubscribe_headers(_header_text(spec.unsubscribe_url, "unsubscribe_url"))
    for name, value in custom_headers(spec.headers):
        head.append(mime.header(name, text_words(value, utf8=utf8)))
    head.append(mime.MIME_VERSION)

    text, html, inline, content = _body(spec, body, images or {})
    files = [read_file(path, what="Attachment") for path in attachments]
    if files:
        content = mime.multipart(
            b"mixed",
            [content, *(mime.file_part(f.content, f.mime_type, f.filename) for f in files)],
        )

    envelope = Envelope(
        "" if sender is None else addr_spec(sender),
        tuple(map(addr_spec, (*to_addrs, *cc_addrs, *bcc_addrs))),
        spec.dsn_notify,
        spec.dsn_ret,
        spec.dsn_envid,
    )
    return Draft(
        CRLFBytes(b"".join(head) + content),
        envelope,
        subject=subject,
        from_address=sender,
        to_addresses=to_addrs,
        cc_addresses=cc_addrs,
        bcc=list(map(addr_spec, bcc_addrs)),
        reply_to_address=reply_to,
        priority=priority.lower() if isinstance(priority, str) else None,
        text=text,
        html=html,
        attachments=files,
        inline_images=inline,
    )


def unsubscribe_headers(url: str) -> list[bytes]:
    """RFC 8058 one-click unsubscribe: ``List-Unsubscribe`` and ``List-Unsubscribe-Post``.

    ``url`` must be an https URL without blanks or angle brackets (checked here).
    """
    if not url.lower().startswith("https://") or any(c in url for c in " <>"):
        raise FluxMailException(
            "unsubscribe_url must be an https:// URL (RFC 8058 one-click)", "invalid_params"
        )
    return [
        # A URL too long for one line (over folding.LONG_WORD) becomes encoded words.
        mime.header("List-Unsubscribe", text_words(f"<{url}>", utf8=False)),
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    ]


def _id_domain(sender: Mailbox | None) -> str:
    if sender is None:
        return "fluxmail.invalid"
    return _ascii_domain(sender.rpartition("@")[2] if isinstance(sender, str) else sender.domain)


@lru_cache(maxsize=64)
def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "fluxmail.invalid"


#: A plain ASCII address without a display name, exactly as parse_address accepts it (dot-atom
#: local part, host name labels): the common case, parsed without the general path.
_SIMPLE_ADDRESS = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*)"
)


def _address(value: object, role: str) -> Mailbox:
    """``parse_address``, except for the common bare ASCII address: checked with one regular
    expression and kept as the string it is (no ``Address`` object; its addr-spec is itself).
    Anything else (a display name, non-ASCII, blanks to strip, an error to report) takes the
    general path, with every check it makes."""
    if isinstance(value, str) and len(value) <= 254 and _SIMPLE_ADDRESS.fullmatch(value):
        return value
    return parse_address(value, role=role)


def addr_spec(mailbox: Mailbox) -> str:
    """The bare address of a mailbox (``user@example.com``), as the envelope carries it."""
    if isinstance(mailbox, str):
        return mailbox
    # username@domain: the parser admits no local part that needs quoting.
    return f"{mailbox.username}@{mailbox.domain}"


def _needs_utf8(mailboxes: Iterable[Mailbox | None]) -> bool:
    """Whether any mailbox has a non-ASCII local part (a bare one never has)."""
    for mailbox in mailboxes:
        if isinstance(mailbox, Address) and not mailbox.username.isascii():
            return True
    return False


@lru_cache(maxsize=256)
def _cached_address(value: str, role: str) -> Mailbox:
    return _address(value, role)


def _repeated_address(value: object, role: str) -> Mailbox:
    """An address that recurs on every message (the sender), parsed once per process."""
    return _cached_address(value, role) if isinstance(value, str) else _address(value, role)


@lru_cache(maxsize=256)
def _cached_from_line(sender: str, utf8: bool) -> bytes:
    return mime.address_header("From", [sender], utf8=utf8)


def _from_line(sender: Mailbox, utf8: bool) -> bytes:
    """The From line; a bare sender's (the same on every message) written once per process."""
    if isinstance(sender, str):
        return _cached_from_line(sender, utf8)
    return mime.address_header("From", [sender], utf8=utf8)


def _threading_headers(in_reply_to: object, references: object, *, utf8: bool) -> list[bytes]:
    lines = []
    if in_reply_to is not None:
        value = _header_text(in_reply_to, "in_reply_to")
        lines.append(mime.header("In-Reply-To", text_words(value, utf8=utf8)))
    if references is not None:
        refs = references if isinstance(references, list | tuple) else [references]
        value = " ".join(_header_text(r, "references") for r in refs)
        lines.append(mime.header("References", text_words(value, utf8=utf8)))
    return lines


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


_CID = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:[.@][!#-'*+\-/-9=?A-Z^-~]+)*")  # atext, dots, @


def _body(
    spec: MessageSpec, body: str, images: Mapping[object, object]
) -> tuple[str | None, str | None, dict[str, Attachment], bytes]:
    """The body part(s); returns the text, the final HTML, the inline images and the bytes."""
    if not body.isascii():
        body = _unicode_text(body, "body")
    if not spec.html_body:
        return body, None, {}, mime.text_part(body, b"plain")
    text = None
    html = inline_css(body) if spec.inline_css else body
    html_part = mime.text_part(html, b"html")
    inline: dict[str, Attachment] = {}
    if images:
        parts = [html_part]
        for cid, path in images.items():
            name = _header_text(cid, "inline image cid")
            if not _CID.fullmatch(name):
                raise FluxMailException(
                    f"inline image cid {name!r} must be letters, digits and -._ (it is used "
                    'as <img src="cid:...">)',
                    "invalid_params",
                )
            item = inline[name] = read_file(path, what="Inline image")
            parts.append(
                mime.file_part(
                    item.content,
                    item.mime_type,
                    item.filename,
                    disposition="inline",
                    content_id=name,
                )
            )
        html_part = mime.multipart(b"related", parts)
    plain: object = spec.plain_body
    if plain is None:
        return text, html, inline, html_part
    if not isinstance(plain, str):
        raise FluxMailException("plain_body must be a string", "invalid_params")
    text = _unicode_text(plain, "plain_body")
    content = mime.multipart(b"alternative", [mime.text_part(text, b"plain"), html_part])
    return text, html, inline, content
