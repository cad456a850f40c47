"""FluxMail's exception tree.

Every error FluxMail raises is a :class:`FluxMailException` whose ``code`` says what went wrong
(the codes of the contract plus the transport codes below). Transport errors also subclass the
stdlib exception a caller would naturally catch, so ``except TimeoutError`` and
``except ConnectionError`` keep working::

    FluxMailException                      code: any
    ├── SMTPConnectError (ConnectionError) connection_refused, dns_failed, connection_lost
    ├── SMTPTimeoutError (TimeoutError)    timeout
    ├── TLSError                           tls_failed, starttls_not_advertised
    ├── AuthError                          auth_failed, auth_unsupported, auth_requires_tls
    └── SMTPReplyError                     smtp_transient (4xx), smtp_permanent (5xx)
        └── RecipientsRefused              recipients_refused (every recipient refused)

``FluxMail.send()`` wraps whatever ended the last attempt in ``FluxMailException`` with code
``send_failed`` and chains the cause (``exc.__cause__``), as the contract requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluxmail.protocol.replies import Reply


class FluxMailException(Exception):  # noqa: N818 - the public name predates us
    """Base of every FluxMail error. ``str(exc)`` is the message, ``exc.code`` the code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class SMTPConnectError(FluxMailException, ConnectionError):
    """The TCP connection could not be made, or broke while in use."""


class SMTPTimeoutError(FluxMailException, TimeoutError):
    """The server did not answer within the timeout."""


class TLSError(FluxMailException):
    """The TLS handshake failed, or STARTTLS was required but not offered."""


class AuthError(FluxMailException):
    """Authentication was refused, impossible, or would have exposed the password."""


class SMTPReplyError(FluxMailException):
    """The server answered a command with an error reply.

    ``reply`` is the :class:`~fluxmail.protocol.replies.Reply`; ``transient`` is true for 4xx
    replies, which are worth retrying, and false for permanent 5xx ones.
    """

    def __init__(self, message: str, reply: Reply, command: str = "") -> None:
        super().__init__(message, "smtp_transient" if reply.transient else "smtp_permanent")
        self.reply = reply
        self.command = command

    @property
    def transient(self) -> bool:
        return self.reply.transient

    @property
    def enhanced(self) -> str | None:
        """The server's RFC 3463 status code (``"5.1.1"``), when it sent one."""
        return self.reply.enhanced


class RecipientsRefused(SMTPReplyError):  # noqa: N818 - reads as what happened
    """Every recipient of a message was refused; ``refused`` maps each address to its reply."""

    def __init__(self, refused: dict[str, Reply]) -> None:
        # The message is transient only if some refusal was; retrying a wholly permanent
        # refusal would only annoy the relay.
        worst = min(refused.values(), key=lambda r: 0 if r.transient else 1)
        detail = "; ".join(f"{addr}: {r}" for addr, r in refused.items())
        super().__init__(f"All recipients were refused ({detail})", worst, "RCPT TO")
        self.code = "recipients_refused"
        self.refused = refused


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying: network trouble, timeouts and 4xx replies.

    Permanent replies (5xx), authentication and TLS failures, and bad input are not: they would
    fail the same way again.
    """
    if isinstance(exc, SMTPReplyError):
        return exc.transient
    return isinstance(exc, SMTPConnectError | SMTPTimeoutError)
