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
class Extensions:
    """What the server advertised in its EHLO reply: keyword (upper case) → parameters."""

    keywords: dict[str, str] = field(default_factory=dict)
    esmtp: bool = True

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
    if not _needs_utf8(address):
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


def xtext(value: str) -> str:
    """RFC 3461 xtext: ``+``, ``=``, spaces and controls as ``+HH``."""
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=" else f"+{ord(ch):02X}" for ch in value)


def mail_from(envelope: Envelope, extensions: Extensions, size: int, *, eight_bit: bool) -> bytes:
    """The MAIL FROM line, with SIZE, BODY=8BITMIME (for 8-bit content) and SMTPUTF8 when the
    server offers them."""
    utf8 = extensions.has("SMTPUTF8") and (
        _needs_utf8(envelope.sender) or any(map(_needs_utf8, envelope.recipients))
    )
    args = [f"FROM:<{envelope_address(envelope.sender, smtputf8=utf8)}>"]
    if extensions.has("SIZE"):
        args.append(f"SIZE={size}")
    if eight_bit and extensions.has("8BITMIME"):
        args.append("BODY=8BITMIME")
    if utf8:
        args.append("SMTPUTF8")
    if extensions.has("DSN"):
        if envelope.ret:
            args.append(f"RET={envelope.ret.upper()}")
        if envelope.envid:
            args.append(f"ENVID={xtext(envelope.envid)}")
    return command("MAIL", *args)


def rcpt_to(address: str, extensions: Extensions, notify: tuple[str, ...] = ()) -> bytes:
    utf8 = extensions.has("SMTPUTF8")
    wire = envelope_address(address, smtputf8=utf8)
    if notify and extensions.has("DSN"):
        orcpt = f"ORCPT=rfc822;{xtext(wire)}" if wire.isascii() else None
        unique = dict.fromkeys(n.upper() for n in notify)  # keep the caller's order, once each
        args = [f"NOTIFY={','.join(unique)}", *([orcpt] if orcpt else [])]
        return command("RCPT", f"TO:<{wire}>", *args)
    return command("RCPT", f"TO:<{wire}>")
