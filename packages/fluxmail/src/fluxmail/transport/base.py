"""What both transports share: settings, logging, and turning OS errors into FluxMail errors."""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fluxmail.errors import (
    FluxMailException,
    RecipientsRefused,
    SMTPConnectError,
    SMTPReplyError,
    SMTPTimeoutError,
    TLSError,
)
from fluxmail.logs import Log, log
from fluxmail.protocol.ops import Conversation, Exchange
from fluxmail.protocol.replies import Reply
from fluxmail.protocol.session import ServerInfo, SessionPlan


@cache
def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (``localhost``, 127.0.0.0/8, ``::1``):
    the one place a password may go without TLS by default, since it never leaves the host."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_hostname() -> str:
    """The name we give in EHLO. Not ``getfqdn()``: its reverse lookup can stall for seconds."""
    name = socket.gethostname() or "localhost"
    return name if name.isascii() and " " not in name else "localhost"


#: ``resolve(host, port)``: the IP addresses to connect to, in order of preference.
Resolver = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect; shared by every connection a client opens.

    ``resolve``, when given, replaces the system's name lookup: it is called once per
    connection with ``(host, port)`` and returns the IP addresses to try, in order (it may
    check them, and raise an :class:`OSError` or a FluxMail error to refuse). The connection
    then goes to those addresses only, never looking the name up again (no DNS rebinding
    between a check and the connect), while TLS still checks the certificate against ``host``.
    """

    host: str
    port: int
    plan: SessionPlan
    #: Seconds to wait for the server; None waits without limit.
    timeout: float | None = 30.0
    ssl_context: ssl.SSLContext | None = None
    logger: Log = field(default=log, repr=False)
    min_tls_version: ssl.TLSVersion | None = None
    resolve: Resolver | None = field(default=None, compare=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """The caller's context, or a verifying default; raised to ``min_tls_version``."""
        if self.ssl_context is None:
            return _default_tls_context(self.min_tls_version)
        wanted = self.min_tls_version
        if wanted is not None and self.ssl_context.minimum_version < wanted:
            self.ssl_context.minimum_version = wanted
        return self.ssl_context


@cache
def _default_tls_context(minimum: ssl.TLSVersion | None) -> ssl.SSLContext:
    # Building a context loads the CA store; doing it once per process keeps connects cheap.
    context = ssl.create_default_context()
    if minimum is not None:
        context.minimum_version = minimum
    return context


class ConnectionBase:
    """State and bookkeeping common to :class:`SyncConnection` and :class:`AsyncConnection`."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.info: ServerInfo | None = None
        #: How many messages this connection has carried (pools recycle on it).
        self.messages_sent = 0

    def _debug(self) -> bool:
        """Whether the conversation is logged (asked once per exchange, not per line)."""
        return self.settings.logger.isEnabledFor(logging.DEBUG)

    def _log_out(self, op: Exchange) -> None:
        if op.data:
            shown = "<AUTH data redacted>" if op.secret else _preview(op.data)
            self.settings.logger.debug("%s >>> %s", self.settings.address, shown)

    def _log_in(self, reply: Reply) -> None:
        self.settings.logger.debug("%s <<< %s", self.settings.address, reply)

    def _map_error(self, exc: BaseException, *, connecting: bool) -> FluxMailException:
        """Turn an OS-level failure into the FluxMail error that says what to try."""
        return network_error(exc, self.settings, connecting=connecting)


def network_error(
    exc: BaseException, settings: ConnectionSettings, *, connecting: bool
) -> FluxMailException:
    """The FluxMail error for an OS-level failure talking to ``settings``' relay: the one
    that says what to try."""
    where = settings.address
    if isinstance(exc, FluxMailException):
        return exc
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSError(f"TLS with {where} failed: {exc}", "tls_failed")
    # BlockingIOError: a blocking socket's kernel timeout ran out (see kernel_timeouts).
    if isinstance(exc, TimeoutError | BlockingIOError):
        return SMTPTimeoutError(
            f"{where} did not answer within {settings.timeout or 0:g} s", "timeout"
        )
    if isinstance(exc, socket.gaierror):
        return SMTPConnectError(
            f"Could not resolve {settings.host!r} ({exc.strerror}); check the host name",
            "dns_failed",
        )
    if isinstance(exc, ConnectionRefusedError):
        return SMTPConnectError(
            f"Connection to {where} was refused: nothing listens there, or a firewall "
            "blocks it (check the host and port; some networks block 25 and 587, try 2525)",
            "connection_refused",
        )
    if connecting:
        return SMTPConnectError(f"Could not connect to {where}: {exc}", "connection_failed")
    return SMTPConnectError(f"Connection to {where} broke: {exc}", "connection_lost")


#: What an SMTP attempt may raise: FluxMail's own errors, and the standard library's that
#: smtplib-style stand-ins raise (see :func:`stdlib_error`).
ATTEMPT_ERRORS = (FluxMailException, smtplib.SMTPException, OSError)


def stdlib_error(
    exc: BaseException, settings: ConnectionSettings, *, connecting: bool
) -> FluxMailException:
    """The FluxMail error a real session would have raised for what an smtplib-style stand-in
    raised (an smtplib reply error, a network ``OSError``), chained to it.

    Stand-ins are what FluxMail 0.3.x's tests put in its place: a replaced
    ``fluxmail._transport.smtplib.SMTP`` (:func:`fluxmail.testing.mock_smtp`) or a replaced
    method of a mailer's ``_transport``. FluxMail's own sessions raise FluxMail errors only.
    """
    if isinstance(exc, FluxMailException):
        return exc
    error: FluxMailException
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        error = RecipientsRefused(
            {addr: Reply(*reply_args(value)) for addr, value in exc.recipients.items()}
        )
    elif isinstance(exc, smtplib.SMTPResponseException):
        reply = Reply(exc.smtp_code, (reply_text(exc.smtp_error),))
        error = SMTPReplyError(f"Server replied {reply}", reply)
    elif isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
        exc,
        smtplib.SMTPException,  # every SMTPException is an OSError too
    ):
        error = network_error(exc, settings, connecting=connecting)
    else:
        error = FluxMailException(f"SMTP error: {exc}", "smtp_error")
    error.__cause__ = exc
    return error


def reply_args(value: object) -> tuple[int, tuple[str, ...]]:
    """``Reply`` arguments for smtplib's ``(code, message)`` pair (550 for anything else)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        return value[0], (reply_text(value[1]),)
    return 550, (reply_text(value),)


def reply_text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def connect_tcp(settings: ConnectionSettings) -> socket.socket:
    """A TCP connection to the relay: through ``settings.resolve`` when set (each address in
    turn, the last failure raised), else the system's lookup (``socket.create_connection``)."""
    if settings.resolve is None:
        return socket.create_connection((settings.host, settings.port), settings.timeout)
    failure: OSError | None = None
    for address in settings.resolve(settings.host, settings.port):
        try:
            return socket.create_connection((address, settings.port), settings.timeout)
        except OSError as exc:
            failure = exc
    raise failure or ConnectionRefusedError(f"{settings.host} has no address to connect to")


def kernel_timeouts(sock: socket.socket, timeout: float | None) -> bool:
    """Make a plain TCP socket blocking, its ``timeout`` enforced by the kernel
    (``SO_RCVTIMEO``/``SO_SNDTIMEO``); True if done (Linux, with a timeout).

    With a Python timeout, every ``recv`` and ``send`` is preceded by a ``poll`` system call;
    a blocking socket skips it. A call that waits longer than ``timeout`` then fails with
    ``EAGAIN`` (``BlockingIOError``), reported as a timeout (:func:`network_error`). Only for
    plain sockets: OpenSSL retries a read that timed out this way, so a TLS socket must keep
    Python's timeout (:func:`python_timeout` restores it before a STARTTLS handshake).
    """
    if timeout is None or not sys.platform.startswith("linux"):
        return False
    seconds = min(int(timeout), 2**31 - 1)  # a year is as good as forever here
    micro = max(int((timeout - seconds) * 1_000_000), 0 if seconds else 1)  # below 10**6
    value = struct.pack("@ll", seconds, micro)  # struct timeval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.settimeout(None)
    return True


def python_timeout(sock: socket.socket, timeout: float | None) -> None:
    """Undo :func:`kernel_timeouts`: Python's own timeout again, the kernel's cleared."""
    cleared = struct.pack("@ll", 0, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, cleared)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, cleared)
    sock.settimeout(timeout)


def report_failure(conversation: Conversation[Any], error: FluxMailException) -> FluxMailException:
    """Throw a transport failure into the conversation that was waiting on it, so it can mark
    the messages whose fate it leaves unknown; returns the error to raise (its own or the
    conversation's)."""
    try:
        conversation.throw(error)
    except FluxMailException as final:
        return final
    conversation.close()  # it asked for more I/O on a dead connection: it cannot have any
    return error


def _preview(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", errors="replace").rstrip("\r\n").replace("\r\n", " | ")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(data)} bytes)"


def connection_closed(address: str) -> SMTPConnectError:
    return SMTPConnectError(f"{address} closed the connection", "connection_lost")


def data_before_tls(address: str) -> TLSError:
    # Bytes already buffered when TLS starts were sent in the clear and could be injected by
    # anyone on the path (CVE-2011-0411 in reverse); a client must not act on them.
    return TLSError(f"{address} sent unexpected data before the TLS handshake", "tls_failed")


def handshake_aborted(address: str) -> TLSError:
    # asyncio reports a peer that hangs up mid-handshake as a reset; it is a TLS failure (the
    # sync shell's ssl module says so itself), and retrying will not fix it.
    return TLSError(f"{address} closed the connection during the TLS handshake", "tls_failed")
