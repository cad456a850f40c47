"""SMTP command lines, checked so that no argument can smuggle in a second command."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fluxmail.errors import FluxMailException, InvalidArgumentError

CRLF = b"\r\n"


class CommandInjectionError(InvalidArgumentError):
    """A command argument carried a line break or another control character."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid_params")


# C0 (tab aside) and C1 controls, DEL, Unicode line separators, and lone surrogates (which
# cannot even be encoded).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


#: What may not appear in an envelope address: the controls above, angle brackets, blanks.
_NOT_IN_ENVELOPE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff<> ]")


def has_control_chars(value: str) -> bool:
    """True if ``value`` holds C0 controls (tab excepted), DEL, or Unicode line separators."""
    return _CONTROL.search(value) is not None


def command(verb: str, *args: str) -> bytes:
    """Build one command line; refuse any argument that could end the line early."""
    for arg in args:
        if has_control_chars(arg):
            raise CommandInjectionError(
                f"Refusing to send {verb}: an argument contains a line break or control character"
            )
    line = " ".join((verb, *args)) if args else verb
    return line.encode("utf-8") + CRLF


@dataclass(frozen=True, slots=True)
class EnvelopeFlags:
    """What the envelope commands of every message ask of one server's extensions, worked
    out once per EHLO reply instead of once per message."""

    smtputf8: bool
    pipelining: bool
    size: bool
    eight_bit: bool
    dsn: bool
    max_size: int | None


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server advertised in its EHLO reply: keyword (upper case) → parameters.

    ``keywords`` is read once, when the object is made (into :attr:`flags`): treat it as
    read-only. Each connection holds its own (one per EHLO), so the MAIL FROM lines kept
    here (:func:`mail_from`) live as long as the connection's session.
    """

    keywords: dict[str, str] = field(default_factory=dict)
    esmtp: bool = True
    flags: EnvelopeFlags = field(init=False, compare=False, repr=False)
    #: ``MAIL FROM:<sender>`` (without parameters) by (sender, SMTPUTF8), see mail_from.
    mail_prefixes: dict[tuple[str, bool], bytes] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        flags = EnvelopeFlags(
            smtputf8=self.has("SMTPUTF8"),
            pipelining=self.has("PIPELINING"),
            size=self.has("SIZE"),
            eight_bit=self.has("8BITMIME"),
            dsn=self.has("DSN"),
            max_size=self._max_size(),
        )
        object.__setattr__(self, "flags", flags)  # frozen: set once, here

    @classmethod
    def from_ehlo(cls, lines: Iterable[str]) -> Extensions:
        keywords: dict[str, str] = {}
        for line in list(lines)[1:]:  # the first line is the server's greeting name
            name, _, params = line.strip().partition(" ")
            if name:
                keywords[name.upper()] = params.strip()
        # Some old servers announce AUTH as "AUTH=LOGIN PLAIN"; fold it into AUTH.
        if "AUTH" not in keywords:
            for name, params in list(keywords.items()):
                if name.startswith("AUTH="):
                    keywords["AUTH"] = f"{name[5:]} {params}".strip()
        return cls(keywords)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(self.keywords.get("AUTH", "").upper().split())

    @property
    def max_size(self) -> int | None:
        """The SIZE limit the server announced, or None for none (0 also means none)."""
        return self.flags.max_size

    def _max_size(self) -> int | None:
        value = self.keywords.get("SIZE", "")
        # isdigit() alone admits "²" and other digits int() refuses.
        digits = value.isascii() and value.isdigit()
        return int(value) if digits and int(value) > 0 else None


def _needs_utf8(address: str) -> bool:
    return not address.isascii()


_DNS_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def envelope_address(address: str, *, smtputf8: bool) -> str:
    """The form of ``address`` for MAIL FROM / RCPT TO.

    A non-ASCII domain is IDNA-encoded; a non-ASCII local part needs the server's SMTPUTF8.
    """
    if _NOT_IN_ENVELOPE.search(address) is not None:
        raise CommandInjectionError(f"Invalid envelope address {address!r}")
    if address.isascii():  # not _needs_utf8(address), without the call (once per message)
        return address
    local, _, domain = address.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else domain
        if not _DNS_NAME.match(ascii_domain):  # nameprep can turn "＠" into "@"
            raise UnicodeError("not a host name after IDNA")
    except UnicodeError as exc:
        raise FluxMailException(
            f"Domain {domain!r} cannot be encoded for DNS (IDNA)", "invalid_email"
        ) from exc
    if local.isascii() or smtputf8:
        return f"{local}@{ascii_domain}" if local.isascii() else address
    raise FluxMailException(
        f"The address {address!r} has a non-ASCII local part and the server does not "
        "offer SMTPUTF8",
        "invalid_email",
    )


NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who the message is from and to on the wire (never read from Bcc'd headers).

    ``notify``, ``ret`` and ``envid`` ask for delivery status notifications (RFC 3461); they are
    sent only to servers that advertise DSN.
    """

    sender: str
    recipients: tuple[str, ...]
    notify: tuple[str, ...] = ()
    ret: str | None = None
    envid: str | None = None

    def __post_init__(self) -> None:
        if not self.recipients:
            raise FluxMailException("A message needs at least one recipient", "invalid_params")
        if not self.notify and self.ret is None and self.envid is None:
            return  # no DSN asked for: nothing more to check (the common case)
        for value in (*self.notify, self.ret, self.envid):
            if value is not None and not isinstance(value, str):
                raise FluxMailException(
                    f"DSN settings are strings, got {value!r}", "invalid_params"
                )
        notify = {n.upper() for n in self.notify}
        if not notify <= NOTIFY_VALUES or ("NEVER" in notify and len(notify) > 1):
            raise FluxMailException(
                "dsn_notify takes SUCCESS, FAILURE and DELAY, or NEVER alone", "invalid_params"
            )
        if self.ret is not None and self.ret.upper() not in ("FULL", "HDRS"):
            raise FluxMailException("dsn_ret must be FULL or HDRS", "invalid_params")
        if self.envid is not None and not (
            0 < len(self.envid) <= 100 and self.envid.isascii() and self.envid.isprintable()
        ):
            raise FluxMailException(
                "dsn_envid must be 1-100 printable ASCII characters", "invalid_params"
            )


# Setting the slots through their descriptors, as fluxmail.result.send_result does: a
# frozen dataclass's ``__init__`` sets each of the five fields through object.__setattr__.
_new = object.__new__
_slots = vars(Envelope)
_SETTERS = tuple(_slots[name].__set__ for name in ("sender", "recipients", "notify"))
_set_ret, _set_envid = _slots["ret"].__set__, _slots["envid"].__set__


def plain_envelope(sender: str, recipients: tuple[str, ...]) -> Envelope:
    """``Envelope(sender, recipients)`` without DSN, made about twice as fast (the same
    frozen value); for a caller that already knows ``recipients`` is not empty (the
    one check :class:`Envelope` makes without DSN settings), as ``MessageTemplate`` does."""
    envelope: Envelope = _new(Envelope)
    set_sender, set_recipients, set_notify = _SETTERS
    set_sender(envelope, sender)
    set_recipients(envelope, recipients)
    set_notify(envelope, ())
    _set_ret(envelope, None)
    _set_envid(envelope, None)
    return envelope


def xtext(value: str) -> str:
    """RFC 3461 xtext: ``+``, ``=``, spaces and controls as ``+HH``."""
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=" else f"+{ord(ch):02X}" for ch in value)


#: How many MAIL FROM lines a connection keeps (senders differ rarely; this bounds the rest).
MAIL_PREFIXES = 64


def mail_from(envelope: Envelope, extensions: Extensions, size: int, *, eight_bit: bool) -> bytes:
    """The MAIL FROM line, with SIZE, BODY=8BITMIME (for 8-bit content) and SMTPUTF8 when the
    server offers them.

    ``MAIL FROM:<sender>`` is checked and encoded once per sender and connection (kept in
    ``extensions``); the parameters are added per message. Every value written is checked:
    the address by :func:`envelope_address` (no controls, blanks or brackets), RET and ENVID
    by :class:`Envelope`, ENVID written as xtext.
    """
    flags = extensions.flags
    sender = envelope.sender
    utf8 = flags.smtputf8 and (
        not sender.isascii() or not all(map(str.isascii, envelope.recipients))
    )
    prefix = extensions.mail_prefixes.get((sender, utf8))
    if prefix is None:
        prefix = f"MAIL FROM:<{envelope_address(sender, smtputf8=utf8)}>".encode()
        if len(extensions.mail_prefixes) >= MAIL_PREFIXES:
            extensions.mail_prefixes.clear()
        extensions.mail_prefixes[sender, utf8] = prefix
    eight_bit = eight_bit and flags.eight_bit
    if not (eight_bit or utf8 or (flags.dsn and (envelope.ret or envelope.envid))):
        # The common case, SIZE at most: one formatting, no list to join.
        return b"%s SIZE=%d\r\n" % (prefix, size) if flags.size else prefix + CRLF
    line = [prefix]
    if flags.size:
        line.append(b" SIZE=%d" % size)
    if eight_bit:
        line.append(b" BODY=8BITMIME")
    if utf8:
        line.append(b" SMTPUTF8")
    if flags.dsn:
        if envelope.ret:
            line.append(f" RET={envelope.ret.upper()}".encode("ascii"))
        if envelope.envid:
            line.append(f" ENVID={xtext(envelope.envid)}".encode("ascii"))
    line.append(CRLF)
    return b"".join(line)


def rcpt_to(address: str, extensions: Extensions, notify: tuple[str, ...] = ()) -> bytes:
    """The RCPT TO line (NOTIFY and ORCPT where the server offers DSN).

    Written without :func:`command`: :func:`envelope_address` refuses everything that check
    would (and more), and the NOTIFY values are :class:`Envelope`'s checked keywords.
    """
    flags = extensions.flags
    wire = envelope_address(address, smtputf8=flags.smtputf8)
    if notify and flags.dsn:
        orcpt = f" ORCPT=rfc822;{xtext(wire)}" if wire.isascii() else ""
        unique = dict.fromkeys(n.upper() for n in notify)  # keep the caller's order, once each
        return f"RCPT TO:<{wire}> NOTIFY={','.join(unique)}{orcpt}\r\n".encode()
    return f"RCPT TO:<{wire}>\r\n".encode()
