"""FluxMail's exception tree.

Every error FluxMail raises is a :class:`FluxMailException` whose ``code`` says what went wrong
(the codes of the contract plus the transport codes below). Each is *also* an instance of the
standard exception a caller would naturally catch, the way aiosmtplib's errors subclass
smtplib's: ``except ValueError`` catches bad arguments, ``except smtplib.SMTPException``
catches what the server said (with ``smtp_code`` and ``smtp_error``), ``except ConnectionError``
and ``except TimeoutError`` catch the network. Code written for FluxMail 0.3.x, for smtplib or
for Django's SMTP backend keeps working::

    FluxMailException                                   code: any
    ├── InvalidArgumentError (ValueError)                    invalid_config, invalid_params,
    │   │                                               invalid_priority, invalid_email,
    │   │                                               no_email, sender_required, no_relay,
    │   │                                               outlook_no_sender
    │   └── AttachmentNotFoundError (FileNotFoundError)      attachment_not_found
    ├── FileReadError (OSError)                         read_error
    ├── SMTPConnectError (ConnectionError)              connection_refused, dns_failed,
    │   │                                               connection_failed
    │   ├── SMTPConnectionRefusedError (ConnectionRefusedError)  connection_refused
    │   └── ConnectionLostError (SMTPServerDisconnected)     connection_lost
    ├── SMTPTimeoutError (TimeoutError)                 timeout
    ├── TLSError (SMTPException)                        tls_failed, starttls_not_advertised
    │   ├── TLSHandshakeError (ssl.SSLError)            tls_failed
    │   └── StartTLSNotOfferedError (SMTPNotSupportedError)  starttls_not_advertised
    ├── AuthError (SMTPException)                       auth_requires_tls
    │   ├── AuthenticationFailedError (SMTPAuthenticationError)  auth_failed
    │   └── AuthNotSupportedError (SMTPNotSupportedError)    auth_unsupported
    ├── SMTPReplyError (SMTPResponseException)          smtp_transient (4xx), smtp_permanent (5xx)
    │   ├── (SMTPConnectError of smtplib)               the greeting was refused
    │   ├── (SMTPHeloError)                             EHLO/HELO was refused
    │   ├── (SMTPSenderRefused)                         MAIL FROM was refused
    │   ├── (SMTPDataError)                             DATA or the message was refused
    │   └── RecipientsRefused (SMTPRecipientsRefused)   recipients_refused (all refused)
    └── SendFailed                                      send_failed: what ended the last attempt,
                                                        chained (``__cause__``), and an instance
                                                        of that error's standard class too

As with :class:`OSError` (``OSError(errno.ENOENT, ...)`` is a ``FileNotFoundError``),
constructing a base class with a code that has a more precise class gives an instance of that
class: ``FluxMailException("...", "invalid_params")`` is an :class:`InvalidArgumentError`.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from fluxmail.protocol.replies import Reply


class FluxMailException(Exception):  # noqa: N818 - the public name predates us
    """Base of every FluxMail error. ``str(exc)`` is the message, ``exc.code`` the code."""

    #: ``code`` -> the more precise class a construction with that code yields.
    _by_code: ClassVar[dict[str, type[FluxMailException]]] = {}

    def __new__(cls, message: str = "", code: str | None = None, *args: Any, **kwargs: Any) -> Any:
        target = cls._by_code.get(code or "", cls)
        if not issubclass(target, cls):  # a subclass table never widens the class asked for
            target = cls
        # OSError-derived classes must be allocated by OSError; give it only the message so
        # errno/strerror stay unset and str() is ours.
        base: Any = OSError if issubclass(target, OSError) else Exception
        return base.__new__(target, message)

    def __init__(self, message: str, code: str | None = None) -> None:
        # Not super().__init__: the smtplib bases want (code, msg) and OSError wants errno;
        # every FluxMail error carries one message and sets the standard attributes itself.
        Exception.__init__(self, message)
        self.message = message
        self.code = code

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_code = {}  # each class dispatches only to its own subclasses

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through FluxMailException so subclasses with richer constructors pickle
        # (as a plain error of the same code) instead of failing in a worker process.
        return (FluxMailException, (self.message, self.code))


def _register(*codes: str) -> Any:
    """Class decorator: constructing any ancestor with one of ``codes`` yields this class."""

    def apply(cls: type[FluxMailException]) -> type[FluxMailException]:
        for ancestor in cls.__mro__[1:]:
            if isinstance(ancestor, type) and issubclass(ancestor, FluxMailException):
                for code in codes:
                    ancestor._by_code.setdefault(code, cls)
        return cls

    return apply


# -- bad input --------------------------------------------------------------------------------


@_register(
    "invalid_config",
    "invalid_params",
    "invalid_priority",
    "invalid_email",
    "no_email",
    "sender_required",
    "no_relay",
    "outlook_no_sender",
)
class InvalidArgumentError(FluxMailException, ValueError):
    """A bad argument, setting or address: fix the call, retrying will not help."""


@_register("attachment_not_found")
class AttachmentNotFoundError(InvalidArgumentError, FileNotFoundError):
    """An attachment or inline image path names no file."""


@_register("read_error")
class FileReadError(FluxMailException, OSError):
    """A file (attachment, template, body file) exists but could not be read."""


# -- the network ------------------------------------------------------------------------------


@_register("connection_failed", "dns_failed")
class SMTPConnectError(FluxMailException, ConnectionError):
    """The TCP connection could not be made, or broke while in use."""


@_register("connection_refused")
class SMTPConnectionRefusedError(SMTPConnectError, ConnectionRefusedError):
    """Nothing listens on the relay's port, or a firewall refused the connection."""


@_register("connection_lost")
class ConnectionLostError(SMTPConnectError, smtplib.SMTPServerDisconnected):
    """The server closed the connection, or it broke, in the middle of a session."""


@_register("timeout")
class SMTPTimeoutError(FluxMailException, TimeoutError):
    """The server did not answer within the timeout."""


# -- TLS and authentication -------------------------------------------------------------------


class TLSError(FluxMailException, smtplib.SMTPException):
    """The TLS handshake failed, or STARTTLS was required but not offered."""


@_register("tls_failed")
class TLSHandshakeError(TLSError, ssl.SSLError):
    """The TLS handshake failed (certificate, protocol version, a peer that is not TLS)."""


@_register("starttls_not_advertised")
class StartTLSNotOfferedError(TLSError, smtplib.SMTPNotSupportedError):
    """``use_tls=True`` and the server does not offer STARTTLS: never a silent downgrade."""


class AuthError(FluxMailException, smtplib.SMTPException):
    """Authentication was refused, impossible, or would have exposed the password.

    ``reply`` is the server's refusal when there was one.
    """

    smtp_code: int
    smtp_error: bytes | str

    def __init__(self, message: str, code: str | None = None, reply: Reply | None = None) -> None:
        super().__init__(message, code)
        self.reply = reply
        # smtplib's SMTPResponseException attributes, for code that reads them.
        self.smtp_code = reply.code if reply is not None else -1
        self.smtp_error = (reply.text if reply is not None else message).encode()


@_register("auth_failed")
class AuthenticationFailedError(AuthError, smtplib.SMTPAuthenticationError):
    """The server refused the credentials (535 and friends)."""


@_register("auth_unsupported")
class AuthNotSupportedError(AuthError, smtplib.SMTPNotSupportedError):
    """The server offers no AUTH mechanism FluxMail can use here."""


# -- what the server said ---------------------------------------------------------------------


@_register("smtp_error")
class SMTPProtocolError(FluxMailException, smtplib.SMTPException):
    """The session failed with no reply to show: smtplib's bare ``SMTPException``, as an
    smtplib-style stand-in (0.3.x's test doubles) raises it."""


class SMTPReplyError(FluxMailException, smtplib.SMTPResponseException):
    """The server answered a command with an error reply.

    ``reply`` is the :class:`~fluxmail.protocol.replies.Reply`; ``transient`` is true for 4xx
    replies, which are worth retrying, and false for permanent 5xx ones. ``smtp_code`` and
    ``smtp_error`` are smtplib's names for the same reply. The instance is also the smtplib
    class for the refused command: ``SMTPSenderRefused`` (MAIL), ``SMTPDataError`` (DATA),
    ``SMTPHeloError`` (EHLO), ``smtplib.SMTPConnectError`` (the greeting).
    """

    def __new__(cls, message: str, reply: Reply, command: str = "", *args: Any) -> Any:
        target = _BY_COMMAND.get(command, cls) if cls is SMTPReplyError else cls
        return super().__new__(target, message)

    def __init__(self, message: str, reply: Reply, command: str = "") -> None:
        super().__init__(message, "smtp_transient" if reply.transient else "smtp_permanent")
        self.reply = reply
        self.command = command
        self.smtp_code = reply.code
        self.smtp_error = reply.text.encode()

    @property
    def transient(self) -> bool:
        return self.reply.transient

    @property
    def enhanced(self) -> str | None:
        """The server's RFC 3463 status code (``"5.1.1"``), when it sent one."""
        return self.reply.enhanced


class _GreetingRefusedError(SMTPReplyError, smtplib.SMTPConnectError):
    pass


class _HeloRefusedError(SMTPReplyError, smtplib.SMTPHeloError):
    pass


class _SenderRefusedError(SMTPReplyError, smtplib.SMTPSenderRefused):
    sender = ""  # smtplib's attribute; the envelope sender is in the message


class _DataRefusedError(SMTPReplyError, smtplib.SMTPDataError):
    pass


_BY_COMMAND: dict[str, type[SMTPReplyError]] = {
    "greeting": _GreetingRefusedError,
    "EHLO": _HeloRefusedError,
    "HELO": _HeloRefusedError,
    "MAIL": _SenderRefusedError,
    "DATA": _DataRefusedError,
}


class RecipientsRefused(SMTPReplyError, smtplib.SMTPRecipientsRefused):  # type: ignore[misc]  # noqa: N818
    """Every recipient of a message was refused; ``refused`` maps each address to its reply.

    ``recipients`` is smtplib's form of the same: ``{address: (code, message bytes)}``.
    """

    def __new__(cls, refused: dict[str, Reply], *args: Any) -> Any:
        return FluxMailException.__new__(cls, "")

    def __init__(self, refused: dict[str, Reply]) -> None:
        # The message is transient only if some refusal was; retrying a wholly permanent
        # refusal would only annoy the relay.
        worst = min(refused.values(), key=lambda r: 0 if r.transient else 1)
        detail = "; ".join(f"{addr}: {r}" for addr, r in refused.items())
        super().__init__(f"All recipients were refused ({detail})", worst, "RCPT TO")
        self.code = "recipients_refused"
        self.refused = refused
        self.recipients = {addr: (r.code, r.text.encode()) for addr, r in refused.items()}


# -- the end of a send ------------------------------------------------------------------------


class SendFailed(FluxMailException):
    """``send_failed``: every attempt failed. The last error is ``__cause__``.

    Built with :func:`send_failed`, the instance is also of the cause's standard class
    (``smtplib.SMTPRecipientsRefused``, ``ConnectionError``, ...) and carries its smtplib
    attributes, so code that catches those keeps catching a failed send.
    """


class _SendFailedRecipients(SendFailed, smtplib.SMTPRecipientsRefused):
    recipients: dict[str, tuple[int, bytes]]


class _SendFailedReply(SendFailed, smtplib.SMTPResponseException):
    smtp_code: int
    smtp_error: bytes


class _SendFailedSMTP(SendFailed, smtplib.SMTPException):
    pass


class _SendFailedConnectionError(SendFailed, ConnectionError):
    pass


class _SendFailedDisconnectedError(SendFailed, ConnectionError, smtplib.SMTPServerDisconnected):
    pass


class _SendFailedTimeoutError(SendFailed, TimeoutError):
    pass


class _SendFailedTLS(SendFailed, ssl.SSLError):
    pass


class _SendFailedValueError(SendFailed, ValueError):
    pass


_SEND_FAILED_FAMILIES: tuple[tuple[type[BaseException], type[SendFailed]], ...] = (
    (ConnectionLostError, _SendFailedDisconnectedError),  # both families: before either
    (smtplib.SMTPRecipientsRefused, _SendFailedRecipients),
    (smtplib.SMTPResponseException, _SendFailedReply),
    (smtplib.SMTPException, _SendFailedSMTP),
    (ssl.SSLError, _SendFailedTLS),
    (TimeoutError, _SendFailedTimeoutError),
    (ConnectionError, _SendFailedConnectionError),
    (ValueError, _SendFailedValueError),
)


def send_failed(message: str, cause: BaseException) -> SendFailed:
    """The ``send_failed`` error for ``cause``; the caller raises it ``from cause``."""
    cls = next((c for family, c in _SEND_FAILED_FAMILIES if isinstance(cause, family)), SendFailed)
    error = cls(message, "send_failed")
    for name in ("recipients", "smtp_code", "smtp_error"):
        if hasattr(cause, name):
            setattr(error, name, getattr(cause, name))
    return error


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying: network trouble, timeouts and 4xx replies.

    Permanent replies (5xx), authentication and TLS failures, and bad input are not: they would
    fail the same way again.
    """
    if isinstance(exc, SMTPReplyError):
        return exc.transient
    return isinstance(exc, SMTPConnectError | SMTPTimeoutError)
