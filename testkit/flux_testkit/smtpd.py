"""A real SMTP server on 127.0.0.1 for tests, built on aiosmtpd 1.4.6.

The server runs its own asyncio loop in a background thread, so synchronous tests and asyncio
tests (whatever their loop) use it the same way::

    with SMTPTestServer(tls="starttls", auth=True) as server:
        send_something(server.host, server.port)
        [msg] = server.wait_for_messages(1)

We do not use aiosmtpd's ``Controller``: it needs a fixed port and opens a connection to itself
at start-up. Instead the server binds port 0 (the OS picks a free port, no race), accepts
connections itself and hands each socket to asyncio, so ``connections`` counts only real clients
and ``stop()`` can close every socket it ever accepted (pytest runs with ``-W error``, so a
leaked socket would fail some later test with a ``ResourceWarning``).

What aiosmtpd 1.4.6 advertises in its EHLO reply, in this order (``hostname`` defaults to
``localhost``)::

    250-localhost
    250-SIZE 33554432       (``size``; line absent when size=None)
    250-8BITMIME            (always)
    250-SMTPUTF8            (``smtputf8``; default on)
    250-STARTTLS            (only tls="starttls", and only before the upgrade)
    250-AUTH LOGIN PLAIN    (only auth=True, and with auth_require_tls only after STARTTLS;
                             the auth_mechanisms, sorted: "CRAM-MD5 LOGIN PLAIN XOAUTH2")
    250-PIPELINING          (only with pipelining=True; added by this module)
    250-DSN                 (only with dsn=True; added by this module)
    250 HELP

The greeting is ``220 <hostname> Python SMTP 1.4.6``. Other replies are aiosmtpd's: ``250 OK``
to MAIL/RCPT/accepted DATA, ``354 End data with <CR><LF>.<CR><LF>``, ``221 Bye``. Known
aiosmtpd limits: every RCPT parameter is refused with ``555`` (with dsn=True all but
``NOTIFY``/``ORCPT``), and so are MAIL parameters other than SIZE/BODY/SMTPUTF8 (with dsn=True
also ``RET``/``ENVID``); mail parameters are upper-cased (DSN ones keep their value as sent); a
data line longer than 1001 bytes gets ``500`` after the final dot; there is no CHUNKING/BDAT;
a command line longer than 512 characters (a little more for MAIL, see ``dsn``) gets ``500
Command line too long``, AUTH lines included (RFC 4954 allows 12288), so an XOAUTH2 initial
response only fits a token of up to about 330 characters.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from types import TracebackType
from typing import Any, AnyStr, Literal, NoReturn, TypedDict

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

from flux_testkit import certs

__all__ = [
    "DEFAULT_OAUTH_TOKENS",
    "DEFAULT_USERS",
    "Faults",
    "ReceivedMessage",
    "SMTPTestServer",
    "ServerOptions",
    "TLSMode",
    "closed_port",
]

TLSMode = Literal["none", "starttls", "ssl"]

#: Credentials accepted when ``users`` is not given.
DEFAULT_USERS: dict[str, str] = {"user@example.com": "s3cret-pass"}
#: XOAUTH2 bearer tokens accepted when ``oauth_tokens`` is not given (user → tokens).
DEFAULT_OAUTH_TOKENS: dict[str, frozenset[str]] = {
    "user@example.com": frozenset({"ya29.test-access-token"})
}

_BUILTIN_AUTH_MECHANISMS = frozenset({"LOGIN", "PLAIN"})
#: Implemented by _Session.auth_CRAM__MD5 / auth_XOAUTH2 (aiosmtpd maps "__" to "-").
_EXTRA_AUTH_MECHANISMS = frozenset({"CRAM-MD5", "XOAUTH2"})
_AUTH_MECHANISMS = _BUILTIN_AUTH_MECHANISMS | _EXTRA_AUTH_MECHANISMS
_STOP_TIMEOUT = 10.0

#: What Google and Microsoft answer (base64-encoded, in a 334 challenge) to a refused token.
_XOAUTH2_ERROR = json.dumps(
    {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"},
    separators=(",", ":"),
)
_XOAUTH2_REFUSED = "535 5.7.8 Username and Password not accepted"

# RFC 3461 DSN parameters. xtext: printable ASCII but "+" and "=", which travel as "+HH".
_XTEXT = r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+"
_ENVID_RE = re.compile(_XTEXT + r"\Z")
_ORCPT_RE = re.compile(r"[A-Za-z0-9-]+;" + _XTEXT + r"\Z")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAIL_DSN_PARAMS = ("RET", "ENVID")
_RCPT_DSN_PARAMS = ("NOTIFY", "ORCPT")
# RFC 3461: DSN parameters may lengthen MAIL lines by 110 and RCPT lines by 500 characters.
_MAIL_DSN_EXTRA = 110
_RCPT_DSN_EXTRA = 500


def _not_login_data_deprecation(record: logging.LogRecord) -> bool:
    # aiosmtpd 1.4.6 itself touches its deprecated Session.login_data after every successful
    # AUTH and logs a warning about it; nothing we pass avoids it, so drop just that record.
    return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_not_login_data_deprecation)


@dataclass
class ReceivedMessage:
    """One message whose content the server received completely (after the final dot).

    ``data`` is exactly what aiosmtpd hands to its DATA hook: the bytes between the ``354`` reply
    and the terminating ``.<CRLF>`` line, with transparency dots removed (a line sent as
    ``..x`` arrives as ``.x``) and nothing else changed: line endings are kept as sent (CRLF
    from a compliant client), the terminator line is not included, so the data of a
    well-formed message ends with the CRLF of its last line. No ``Received:`` header is added.
    """

    #: Reverse-path without angle brackets; ``""`` for the null sender ``MAIL FROM:<>``.
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    #: ``data`` with CRLF turned into LF, parsed by ``BytesParser(policy=email.policy.default)``
    #: (so ``message.get_content()`` has ``"\n"`` line ends, as usual for parsed mail).
    message: EmailMessage
    #: MAIL FROM parameters in the order sent. As aiosmtpd stores them they are upper-cased,
    #: e.g. ``["SIZE=123", "BODY=8BITMIME"]``; with dsn=True, ``RET=``/``ENVID=`` keep their
    #: value as sent (xtext is case-sensitive): ``["SIZE=123", "RET=HDRS", "ENVID=a+2Bb"]``.
    mail_options: list[str]
    #: The RCPT TO parameters of each recipient: one list per entry of ``rcpt_tos``, in the
    #: same order, each holding that RCPT's parameters in the order sent (keyword upper-cased,
    #: value as sent), e.g. ``[["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;a@example.com"], []]``.
    #: Only dsn=True lets parameters (``NOTIFY``, ``ORCPT``) through; otherwise every list is
    #: empty (aiosmtpd refuses a RCPT with parameters with ``555``).
    rcpt_options: list[list[str]]
    #: Whether the connection was TLS-protected (STARTTLS or implicit TLS) when DATA ran.
    tls: bool
    #: The negotiated protocol (``ssl.SSLObject.version()``): ``"TLSv1.3"``, ``"TLSv1.2"``...;
    #: None without TLS.
    tls_version: str | None
    #: Login name of the authenticated user (any mechanism; the ``user=`` of XOAUTH2), or None.
    auth_user: str | None
    #: The client's (host, port).
    peer: tuple[str, int]


@dataclass
class Faults:
    """Misbehaviour to inject. Every default means "no fault".

    The server reads its ``faults`` attribute when each command arrives, so a test may mutate
    the fields (or replace the object) between sends. Counters are decremented by the server
    each time the fault fires.
    """

    #: Reject new connections: send ``<code> Service not available`` instead of the 220
    #: greeting, then close. Applies to every connection while set (with tls="ssl" the reply
    #: is sent after the TLS handshake).
    greeting_code: int | None = None
    #: Answer the next N MAIL FROM commands with ``mail_from_transient_code`` instead of 250.
    mail_from_transient: int = 0
    #: 451 → ``451 4.3.0 Temporary failure`` (session stays usable);
    #: 421 → ``421 4.3.0 Service not available, closing transmission channel``, then the
    #: server closes the connection.
    mail_from_transient_code: int = 451
    #: Per-recipient RCPT replies, e.g. ``{"nobody@example.com": (550, "5.1.1 No such user")}``
    #: → ``550 5.1.1 No such user``. Matched case-insensitively; other recipients get 250.
    refuse_recipients: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: Answer the final reply of the next N DATA transfers (after the whole message was
    #: received) with ``451 4.3.0 Temporary failure``. Checked before ``permanent_failure``.
    transient_failures: int = 0
    #: Answer the final reply of every DATA transfer with ``<permanent_code> 5.7.1 Message
    #: rejected`` while set.
    permanent_failure: bool = False
    permanent_code: int = 554
    #: For the next N DATA commands: send ``354``, read one line of the content, then abort the
    #: connection without any reply.
    drop_in_data: int = 0
    #: When a connection has already received k MAIL FROM commands (k = this value), abort it
    #: without a reply as the (k+1)th MAIL FROM arrives. The count is per connection, so a
    #: client that reconnects can send k more; 0 drops every MAIL FROM.
    drop_after_messages: int | None = None
    #: Sleep this long before the final reply to DATA (any outcome). A client that gives up
    #: and disconnects meanwhile leaves no message behind.
    delay_reply_seconds: float = 0.0
    #: For the next N messages: take the whole message (up to the final dot), keep it (it is
    #: in ``messages``: the relay has it and would deliver it), then abort the connection
    #: without the final reply: the client cannot know the message went through.
    drop_after_data: int = 0


class ServerOptions(TypedDict, total=False):
    """Keyword arguments of :class:`SMTPTestServer` (for typed factories)."""

    tls: TLSMode
    auth: bool
    users: dict[str, str] | None
    oauth_tokens: Mapping[str, Set[str]] | None
    auth_mechanisms: Sequence[str]
    auth_require_tls: bool
    require_auth: bool
    require_starttls: bool
    hostname: str
    faults: Faults | None
    pipelining: bool
    smtputf8: bool
    size: int | None
    dsn: bool
    tls_max_version: ssl.TLSVersion | None


class SMTPTestServer:
    """A real SMTP server on ``127.0.0.1``, in a background thread.

    Args:
        tls: ``"none"``: plaintext, STARTTLS not advertised (the command gets ``454 TLS not
            available``). ``"starttls"``: plaintext, STARTTLS advertised and supported.
            ``"ssl"``: implicit TLS from the first byte (a port-465 style listener; STARTTLS
            gets 454). Certificates come from :mod:`flux_testkit.certs`, so clients should use
            ``certs.client_ssl_context()``.
        auth: advertise and accept ``AUTH`` (mechanisms ``auth_mechanisms``) with the
            credentials in ``users`` (default :data:`DEFAULT_USERS`). Wrong credentials get
            ``535 5.7.8 Authentication credentials invalid``. Without auth, AUTH is not
            advertised and answered with ``502 5.5.1 AUTH not supported``.
        users: login → password, for PLAIN, LOGIN and CRAM-MD5 (copied; see ``self.users``).
        oauth_tokens: login → bearer tokens XOAUTH2 accepts (default
            :data:`DEFAULT_OAUTH_TOKENS`; copied, see ``self.oauth_tokens``).
        auth_mechanisms: any non-empty subset of ``LOGIN``, ``PLAIN`` (aiosmtpd's own),
            ``CRAM-MD5`` and ``XOAUTH2`` (case-insensitive). On the wire:

            - ``CRAM-MD5`` (RFC 2195): ``AUTH CRAM-MD5`` (an initial response gets ``501``) →
              ``334 base64("<random.timestamp@hostname>")``; the client answers
              ``base64(user + " " + lowercase hex HMAC-MD5(password, challenge))``, checked
              against ``users``.
            - ``XOAUTH2`` (Google's and Microsoft's SASL mechanism): ``AUTH XOAUTH2
              base64("user=" user "\\x01auth=Bearer " token "\\x01\\x01")`` (or ``AUTH
              XOAUTH2``, ``334 ``, then that line). An accepted token gets ``235``; a refused
              one ``334 base64('{"status":"401","schemes":"bearer","scope":
              "https://mail.google.com/"}')``, and whatever the client answers (it should send
              an empty line; ``*`` gets ``501 5.7.0 Auth aborted``) then ``535 5.7.8 Username
              and Password not accepted``. A malformed response gets ``501``.

            Every mechanism answers undecodable base64 with ``501 5.5.2 Can't decode base64``
            and ``*`` (client cancels) with ``501 5.7.0 Auth aborted``.
        auth_require_tls: refuse AUTH on a plaintext session (not advertised; an AUTH
            command gets ``538 5.7.11 Encryption required for requested authentication
            mechanism``), like real relays. Implicit-TLS sessions always satisfy it.
        require_auth: MAIL/RCPT/DATA (and VRFY/HELP) get ``530 5.7.0 Authentication
            required`` until the session authenticated.
        require_starttls: with tls="starttls" only: every command except EHLO, NOOP,
            STARTTLS and QUIT gets ``530 Must issue a STARTTLS command first`` before TLS.
        hostname: name used in the greeting and in the EHLO reply.
        faults: initial :class:`Faults` (a fresh one by default); see ``self.faults``.
        pipelining: also advertise PIPELINING (aiosmtpd handles pipelined commands anyway).
        smtputf8: advertise and accept SMTPUTF8.
        size: advertised SIZE and DATA size limit in bytes (``552`` beyond); None: no limit,
            not advertised.
        dsn: advertise DSN (RFC 3461) and accept its parameters: ``RET=FULL|HDRS`` and
            ``ENVID=<xtext>`` on MAIL, ``NOTIFY=NEVER|<SUCCESS,FAILURE,DELAY list>`` and
            ``ORCPT=<addr-type>;<xtext>`` on RCPT (keywords and RET/NOTIFY values are
            case-insensitive). A malformed one gets ``501 5.5.4 Bad <KEYWORD> parameter
            syntax``, a repeated one ``501 5.5.4 Bad <KEYWORD> parameter (repeated)``; other
            unknown parameters still get ``555``. MAIL lines may be 110 and RCPT lines 500
            characters longer than without DSN (RFC 3461). The parameters are recorded in
            ``mail_options`` and ``rcpt_options`` of :class:`ReceivedMessage`; no DSN is
            ever sent.
        tls_max_version: the highest TLS version the server negotiates (e.g.
            ``ssl.TLSVersion.TLSv1_2``, to check a client's minimum); None: OpenSSL's
            default (TLS 1.3). Needs tls="starttls" or "ssl".

    Attributes (valid after :meth:`start`):
        host: always ``"127.0.0.1"``.
        port: the port chosen by the OS.
        messages: accepted messages (final reply 250), in arrival order.
        rejected: messages received completely but answered with an injected 4xx/5xx.
        connections: TCP connections accepted (including rejected or failed ones).
        tls_handshake_failures: TLS handshakes that failed, implicit TLS or after STARTTLS
            (the server closes those connections).
        commands: every line the clients sent outside message content, raw and stripped of
            the line ending (case as sent), across all connections, e.g. ``["EHLO me", "STARTTLS",
            "EHLO me", "AUTH PLAIN AHVz...", "MAIL FROM:<a@b> SIZE=12", ..., "DATA",
            "QUIT"]``. AUTH continuation lines (base64 answers to ``334``) are included.
            Lines sent in plaintext before a STARTTLS handshake but after the STARTTLS
            command are discarded (as the server discards them).
        faults: the :class:`Faults` in effect; read at the time of each command.
        users, oauth_tokens: the accepted credentials; read at each AUTH, so a test may
            change them (e.g. revoke a token) between sends.
    """

    host: str = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: TLSMode = "none",
        auth: bool = False,
        users: dict[str, str] | None = None,
        oauth_tokens: Mapping[str, Set[str]] | None = None,
        auth_mechanisms: Sequence[str] = ("LOGIN", "PLAIN"),
        auth_require_tls: bool = False,
        require_auth: bool = False,
        require_starttls: bool = False,
        hostname: str = "localhost",
        faults: Faults | None = None,
        pipelining: bool = False,
        smtputf8: bool = True,
        size: int | None = 33554432,
        dsn: bool = False,
        tls_max_version: ssl.TLSVersion | None = None,
    ) -> None:
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'ssl', not {tls!r}")
        mechanisms = {m.upper() for m in auth_mechanisms}
        if not mechanisms or not mechanisms <= _AUTH_MECHANISMS:
            raise ValueError(
                "auth_mechanisms must be a non-empty subset of "
                + ", ".join(sorted(_AUTH_MECHANISMS))
            )
        if require_starttls and tls != "starttls":
            raise ValueError("require_starttls needs tls='starttls'")
        if tls_max_version is not None:
            if not isinstance(tls_max_version, ssl.TLSVersion):
                raise ValueError(
                    f"tls_max_version must be an ssl.TLSVersion, not {tls_max_version!r}"
                )
            if tls == "none":
                raise ValueError("tls_max_version needs tls='starttls' or tls='ssl'")
        self.tls: TLSMode = tls
        self.auth = auth
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        tokens = DEFAULT_OAUTH_TOKENS if oauth_tokens is None else oauth_tokens
        self.oauth_tokens: dict[str, set[str]] = {u: set(t) for u, t in tokens.items()}
        self.auth_mechanisms = tuple(sorted(mechanisms))
        self.auth_require_tls = auth_require_tls
        self.require_auth = require_auth
        self.require_starttls = require_starttls
        self.hostname = hostname
        self.faults: Faults = Faults() if faults is None else faults
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.size = size
        self.dsn = dsn
        self.tls_max_version = tls_max_version

        self.port: int = 0
        self.messages: list[ReceivedMessage] = []
        self.rejected: list[ReceivedMessage] = []
        self.commands: list[str] = []
        self.connections: int = 0
        self.tls_handshake_failures: int = 0

        # Guards the records above; the loop thread appends, the test thread reads and waits.
        self._records = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._ssl_context: ssl.SSLContext | None = None
        # Loop-thread state.
        self._handshakes: dict[asyncio.Task[None], socket.socket] = {}
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._live: set[asyncio.BaseProtocol] = set()
        self._handler = _Handler(self)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SMTPTestServer:
        """Bind a free port, start the server thread and return ``self``.

        Clients may connect as soon as this returns. A stopped server may be started again
        (on a new port; records are kept).
        """
        if self._thread is not None:
            raise RuntimeError("SMTPTestServer already started")
        if self.tls != "none" and self._ssl_context is None:
            context = certs.server_ssl_context()
            context.sslobject_class = _AlertingSSLObject
            if self.tls_max_version is not None:
                context.maximum_version = self.tls_max_version
            self._ssl_context = context
        listener = socket.create_server((self.host, 0))
        listener.setblocking(False)  # accepted from the loop's reader callback
        self.port = listener.getsockname()[1]
        self._listener = listener
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(ready,), name=f"SMTPTestServer:{self.port}", daemon=True
        )
        try:
            thread.start()
            if not ready.wait(_STOP_TIMEOUT):
                raise RuntimeError("SMTPTestServer thread did not start")
        except BaseException:
            listener.close()
            self._listener = None
            raise
        self._thread = thread
        return self

    def stop(self) -> None:
        """Abort every open connection, stop the thread and close all sockets. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_STOP_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT)
            self._thread = None

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test helpers -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``n`` messages were accepted; return a snapshot of all of them.

        Raises:
            AssertionError: fewer than ``n`` arrived within ``timeout`` seconds; the message
                lists what did arrive (accepted and rejected) and the commands seen.
        """
        with self._records:
            if self._records.wait_for(lambda: len(self.messages) >= n, timeout):
                return list(self.messages)
            raise AssertionError(
                f"expected {n} message(s) within {timeout}s, got {len(self.messages)}\n"
                f"accepted: {_summaries(self.messages)}\n"
                f"rejected: {_summaries(self.rejected)}\n"
                f"connections: {self.connections}\n"
                f"commands: {self.commands}"
            )

    def clear(self) -> None:
        """Forget recorded messages, commands and counters. ``faults`` is left as it is."""
        with self._records:
            self.messages.clear()
            self.rejected.clear()
            self.commands.clear()
            self.connections = 0
            self.tls_handshake_failures = 0

    # -- recording (loop thread) --------------------------------------------------------------

    def _record_command(self, line: str) -> None:
        with self._records:
            self.commands.append(line)

    def _record_message(self, message: ReceivedMessage, *, accepted: bool) -> None:
        with self._records:
            (self.messages if accepted else self.rejected).append(message)
            self._records.notify_all()

    # -- event loop (server thread) -----------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        # A selector loop on every platform: add_reader() is needed and Windows' default
        # proactor loop lacks it.
        # Everything gets this loop passed explicitly, so no set_event_loop() is needed.
        loop = asyncio.SelectorEventLoop()
        self._loop = loop
        try:
            assert self._listener is not None
            loop.add_reader(self._listener, self._accept, self._listener)
            loop.call_soon(ready.set)
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _accept(self, listener: socket.socket) -> None:
        # Accept synchronously in the reader callback rather than awaiting loop.sock_accept():
        # cancelling that at stop() could drop a socket it had just accepted, unclosed.
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: backlog drained; anything else: retry later
                return
            conn.setblocking(False)
            # Replies to pipelined commands go out as separate small writes; with Nagle each
            # would wait for the client's delayed ACK (~40 ms), which real servers avoid.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._records:
                self.connections += 1
            task = asyncio.get_running_loop().create_task(self._serve(conn))
            self._handshakes[task] = conn
            task.add_done_callback(self._forget_handshake)

    def _forget_handshake(self, task: asyncio.Task[None]) -> None:
        del self._handshakes[task]

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ssl_context = self._ssl_context if self.tls == "ssl" else None
        try:
            transport, _ = await loop.connect_accepted_socket(
                self._make_protocol, conn, ssl=ssl_context
            )
        except OSError:
            # TLS handshake failed or the client left early; asyncio closed the transport.
            if ssl_context is not None:
                with self._records:
                    self.tls_handshake_failures += 1
            conn.close()
            return
        self._transports.add(transport)

    def _make_protocol(self) -> asyncio.BaseProtocol:
        code = self.faults.greeting_code
        if code is not None:
            return _GreetingRejector(self, code)
        loop = asyncio.get_running_loop()
        return _Session(
            self,
            self._handler,
            loop=loop,
            hostname=self.hostname,
            data_size_limit=self.size,
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            tls_context=self._ssl_context if self.tls == "starttls" else None,
            require_starttls=self.require_starttls,
            # aiosmtpd does not see implicit TLS (it lives below the protocol); those sessions
            # are encrypted anyway, so only plaintext listeners pass the requirement on.
            auth_require_tls=self.auth_require_tls and self.tls != "ssl",
            auth_exclude_mechanism=sorted(_AUTH_MECHANISMS - set(self.auth_mechanisms)),
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            expected = self.users.get(login)
            if expected is not None and data.password == expected.encode("utf-8"):
                return AuthResult(success=True, auth_data=login)
        # Not handled: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    async def _shutdown(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
        tasks = list(self._handshakes)
        pending_socks = list(self._handshakes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A handshake task cancelled before it ran never handed its socket to asyncio.
        for conn in pending_socks:
            conn.close()
        for transport in list(self._transports):
            _abort(transport)
        # connection_lost() runs a few loop iterations after abort(); wait for it so every
        # socket is closed before the loop goes away.
        for _ in range(200):
            if not self._live:
                break
            await asyncio.sleep(0.01)
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        for _ in range(3):  # let the last close callbacks run
            await asyncio.sleep(0)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (connecting gets ECONNREFUSED).

    The port was free a moment ago; another process could take it, which is unlikely enough
    for tests.
    """
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


# -- protocol internals ---------------------------------------------------------------------


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close without flushing or a TLS close_notify: the client just sees the socket die."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    elif transport is not None:
        transport.close()


def _summaries(messages: list[ReceivedMessage]) -> str:
    return (
        ", ".join(
            f"<from={m.mail_from!r} to={m.rcpt_tos} subject={m.message['Subject']!r}>"
            for m in messages
        )
        or "none"
    )


def _peer(session: Session) -> tuple[str, int]:
    peer: Any = session.peer  # aiosmtpd annotates it as str; it is the peername tuple
    return (str(peer[0]), int(peer[1]))


def _auth_user(session: Session) -> str | None:
    login: Any = session.auth_data  # the login SMTPTestServer._authenticate / auth_* stored
    return login if session.authenticated and isinstance(login, str) else None


def _dsn_param(param: str) -> str:
    """A DSN parameter as recorded: keyword upper-cased, value exactly as sent."""
    keyword, _, value = param.partition("=")
    return f"{keyword.upper()}={value}"


def _dsn_error(params: list[str], keywords: tuple[str, ...]) -> str | None:
    """The ``501`` reply for the first malformed or repeated DSN parameter, or None."""
    seen: set[str] = set()
    for param in params:
        keyword, eq, value = param.partition("=")
        keyword = keyword.upper()
        if keyword not in keywords:
            continue
        if keyword in seen:
            return f"501 5.5.4 Bad {keyword} parameter (repeated)"
        seen.add(keyword)
        if keyword == "RET":
            valid = value.upper() in ("FULL", "HDRS")
        elif keyword == "ENVID":
            valid = _ENVID_RE.match(value) is not None
        elif keyword == "NOTIFY":
            notify = value.upper().split(",")
            valid = notify == ["NEVER"] or set(notify) <= _NOTIFY_VALUES
        else:  # ORCPT
            valid = _ORCPT_RE.match(value) is not None
        if not eq or not valid:
            return f"501 5.5.4 Bad {keyword} parameter syntax"
    return None


def _parse_xoauth2(response: bytes) -> tuple[str, str] | None:
    """``(user, token)`` of ``user=<user>^Aauth=Bearer <token>^A^A``; None if malformed."""
    if not response.endswith(b"\x01\x01"):
        return None
    fields: dict[bytes, bytes] = {}
    for part in response[:-2].split(b"\x01"):
        key, _, value = part.partition(b"=")
        fields[key] = value
    scheme, _, token = fields.get(b"auth", b"").partition(b" ")
    user = fields.get(b"user", b"")
    if not user or scheme.lower() != b"bearer" or not token:
        return None
    return user.decode("utf-8", "replace"), token.decode("utf-8", "replace")


def _decode_b64_arg(arg: str) -> bytes | None:
    """An initial response given on the AUTH line (``=`` is the empty one, RFC 4954 4)."""
    if arg == "=":
        return b""
    try:
        return base64.b64decode(arg, validate=True)
    except binascii.Error:
        return None


class _AlertingSSLObject(ssl.SSLObject):
    """Lets a failed TLS handshake end with its alert, as with any real server.

    asyncio (3.11) closes the connection as soon as the server's handshake fails, without
    sending the alert OpenSSL wrote (e.g. ``protocol_version`` when the client's minimum is
    above ``tls_max_version``), so clients would see an unexplained EOF or reset. Reporting
    the first failure as "want read" makes asyncio send what is pending (the alert) and wait;
    the handshake then fails for good when the client hangs up (or sends anything).
    """

    _tk_failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._tk_failure is not None:
            raise self._tk_failure
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._tk_failure = exc
            raise ssl.SSLWantReadError("handshake failed; alert pending") from exc


class _GreetingRejector(asyncio.Protocol):
    """Stands in for a session while ``Faults.greeting_code`` is set."""

    def __init__(self, owner: SMTPTestServer, code: int) -> None:
        self._owner = owner
        self._code = code

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._live.add(self)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{self._code} Service not available\r\n".encode("ascii"))
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._live.discard(self)


class _Envelope(Envelope):
    """aiosmtpd's envelope plus the parameters of each accepted RCPT."""

    def __init__(self) -> None:
        super().__init__()
        #: Parallel to ``rcpt_tos`` (aiosmtpd's flat ``rcpt_options`` cannot say whose).
        self.tk_rcpt_params: list[list[str]] = []


class _Session(SMTP):
    """aiosmtpd's protocol (one instance per connection) plus recording, faults, DSN and the
    CRAM-MD5 and XOAUTH2 mechanisms.

    aiosmtpd dispatches on method names (``smtp_<VERB>``, ``handle_<VERB>``, ``auth_<MECH>``
    with ``__`` standing for ``-``), hence the upper-case names below.
    """

    def __init__(self, owner: SMTPTestServer, handler: _Handler, **kwargs: Any) -> None:
        # Set before SMTP.__init__, which introspects the instance.
        self._tk_owner = owner
        self._tk_buffer = bytearray()
        self._tk_in_content = False
        self._tk_mail_count = 0
        # aiosmtpd 1.4.6 keeps the command length limits in a class attribute shared by every
        # session of the process (each EHLO raises it, each new session resets it); give each
        # session its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **kwargs)
        if owner.dsn:
            self.command_size_limits["MAIL"] += _MAIL_DSN_EXTRA
            self.command_size_limits["RCPT"] += _RCPT_DSN_EXTRA

    def _create_envelope(self) -> Envelope:
        return _Envelope()

    # Command recording: parse the byte stream the way aiosmtpd reads it (commands end at LF,
    # message content is CRLF lines up to ".\r\n" and starts once we send 354).

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            self._tk_owner._live.add(self)
        else:
            # Second call = STARTTLS completed; aiosmtpd drops unread plaintext, so do we.
            self._tk_buffer.clear()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._tk_owner._live.discard(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        buffer = self._tk_buffer
        buffer += data
        while True:
            sep = b"\r\n" if self._tk_in_content else b"\n"
            end = buffer.find(sep)
            if end < 0:
                break
            line = bytes(buffer[: end + len(sep)])
            del buffer[: end + len(sep)]
            if self._tk_in_content:
                self._tk_in_content = line != b".\r\n"
            else:
                text = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
                self._tk_owner._record_command(text)
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        reply = status.encode() if isinstance(status, str) else status
        if reply.startswith(b"354"):
            self._tk_in_content = True
        await super().push(status)

    # Policies aiosmtpd cannot express without warnings or side effects.

    async def check_auth_needed(self, caller_method: str) -> bool:
        # Replaces aiosmtpd's auth_required, which warns when combined with
        # auth_require_tls=False (pytest turns that warning into an error).
        if self._tk_owner.require_auth and not (self.session and self.session.authenticated):
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        if not self._tk_owner.auth:
            await self.push("502 5.5.1 AUTH not supported")
            return
        await super().smtp_AUTH(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A failed STARTTLS handshake: aiosmtpd closes the connection after this; count it
            # instead of logging a traceback.
            with self._tk_owner._records:
                self._tk_owner.tls_handshake_failures += 1
            return "454 4.7.0 TLS handshake failed"  # never sent: the connection is closed
        return await super().handle_exception(error)

    # AUTH mechanisms beyond aiosmtpd's LOGIN and PLAIN. aiosmtpd calls them with the session
    # itself as ``server`` and the AUTH arguments (mechanism, optional initial response).

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """RFC 2195: the client proves the password with an HMAC of our challenge."""
        if len(args) > 1:
            await self.push("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = (
            f"<{secrets.randbelow(10**9)}.{time.time_ns() // 1_000_000}@{self.hostname}>"
        ).encode("ascii")
        response = await self.challenge_auth(challenge)
        if not isinstance(response, bytes):  # aborted or not base64; already answered
            return AuthResult(success=False, handled=True)
        login_bytes, space, digest = response.rpartition(b" ")
        if not space or not login_bytes:
            await self.push("501 5.5.2 Malformed CRAM-MD5 response")
            return AuthResult(success=False, handled=True)
        login = login_bytes.decode("utf-8", "replace")
        password = self._tk_owner.users.get(login)
        if password is not None:
            expected = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
            if hmac.compare_digest(digest, expected.encode("ascii")):
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)  # "535 5.7.8 ... invalid"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """Google's and Microsoft's SASL XOAUTH2: a user name and an OAuth 2 bearer token."""
        if len(args) > 1:
            response = _decode_b64_arg(args[1])
            if response is None:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await self.challenge_auth(b"")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            response = answer
        parsed = _parse_xoauth2(response)
        if parsed is None:
            await self.push("501 5.5.2 Malformed XOAUTH2 response")
            return AuthResult(success=False, handled=True)
        login, token = parsed
        if token in self._tk_owner.oauth_tokens.get(login, ()):
            return AuthResult(success=True, auth_data=login)
        # Refused: explain in a challenge, then refuse whatever the client answers.
        if not isinstance(await self.challenge_auth(_XOAUTH2_ERROR), bytes):
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=_XOAUTH2_REFUSED)

    # Faults.

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        assert self.session is not None
        if not self.session.host_name:  # aiosmtpd answers 503 "send HELO first"
            await super().smtp_MAIL(arg)
            return
        faults = self._tk_owner.faults
        limit = faults.drop_after_messages
        if limit is not None and self._tk_mail_count >= limit:
            await self._tk_hang_up(abort=True)
        self._tk_mail_count += 1
        if faults.mail_from_transient > 0:
            faults.mail_from_transient -= 1
            code = faults.mail_from_transient_code
            if code == 421:
                await self.push("421 4.3.0 Service not available, closing transmission channel")
                await self._tk_hang_up(abort=False)
            else:
                await self.push(f"{code} 4.3.0 Temporary failure")
            return
        await self._tk_mail_or_rcpt("FROM:", _MAIL_DSN_PARAMS, arg)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        await self._tk_mail_or_rcpt("TO:", _RCPT_DSN_PARAMS, arg)

    async def _tk_mail_or_rcpt(
        self, keyword: str, dsn_keywords: tuple[str, ...], arg: str | None
    ) -> None:
        """Run aiosmtpd's MAIL (``keyword`` "FROM:") or RCPT ("TO:"), letting DSN through.

        aiosmtpd refuses parameters it does not know, so with dsn=True the DSN ones are
        checked here and taken off the line before aiosmtpd sees it, and recorded once
        aiosmtpd accepted the command: MAIL's in ``mail_options``, in their original place;
        each accepted RCPT's in ``_Envelope.tk_rcpt_params`` (an empty list without DSN).
        """
        is_mail = keyword == "FROM:"
        envelope, session = self.envelope, self.session
        assert isinstance(envelope, _Envelope)
        assert session is not None
        recorded: list[str] = []
        split = self._tk_split_params(keyword, arg)
        # Leave commands aiosmtpd refuses anyway (no EHLO yet, RCPT before MAIL) to it.
        ready = bool(session.host_name) and (is_mail or bool(envelope.mail_from))
        if self._tk_owner.dsn and split is not None and ready:
            if await self.check_auth_needed("MAIL" if is_mail else "RCPT"):
                return
            head, params = split
            error = _dsn_error(params, dsn_keywords)
            if error is not None:
                await self.push(error)
                return
            is_dsn = [p.partition("=")[0].upper() in dsn_keywords for p in params]
            arg = " ".join([head, *(p for p, dsn in zip(params, is_dsn, strict=True) if not dsn)])
            recorded = [
                _dsn_param(p) if dsn else p.upper() for p, dsn in zip(params, is_dsn, strict=True)
            ]
        mail_before, rcpts_before = envelope.mail_from, len(envelope.rcpt_tos)
        if is_mail:
            await super().smtp_MAIL(arg)
            if recorded and not mail_before and envelope.mail_from:  # accepted
                envelope.mail_options[:] = recorded
        else:
            await super().smtp_RCPT(arg)
            if len(envelope.rcpt_tos) > rcpts_before:  # accepted
                envelope.tk_rcpt_params.append(recorded)

    def _tk_split_params(self, keyword: str, arg: str | None) -> tuple[str, list[str]] | None:
        """``("FROM:<address>", [parameters...])`` of a MAIL/RCPT argument; None if malformed
        (aiosmtpd then answers it)."""
        if arg is None:
            return None
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            return None
        address, params = self._getaddr(rest)
        if not address or params is None:
            return None
        return keyword + rest[: len(rest) - len(params)].strip(), params.split()

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        faults = self._tk_owner.faults
        if faults.drop_in_data > 0 and self._tk_data_would_start(arg):
            faults.drop_in_data -= 1
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await self._reader.readuntil(b"\r\n")  # "part of the message content"
            await self._tk_hang_up(abort=True)
        await super().smtp_DATA(arg)

    async def _tk_hang_up(self, *, abort: bool) -> NoReturn:
        """Close the connection and end this session's command loop.

        Without waiting, aiosmtpd would go on executing commands already buffered (a
        pipelining client's RCPT/DATA, or message lines) and answer into a dead socket.
        connection_lost() cancels the command loop, i.e. this coroutine, a few loop iterations
        after the close (stop() would too).
        """
        if abort:
            _abort(self.transport)
        elif self.transport is not None:
            self.transport.close()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the session is cancelled when the connection closes")

    def _tk_data_would_start(self, arg: str | None) -> bool:
        """Whether aiosmtpd would answer this DATA with 354 (mirrors its checks)."""
        session, envelope = self.session, self.envelope
        if session is None or envelope is None or arg or not session.host_name:
            return False
        if self._tk_owner.require_auth and not session.authenticated:
            return False
        return bool(envelope.rcpt_tos)


class _Handler:
    """aiosmtpd handler hooks (called with the ``_Session`` as ``server``)."""

    def __init__(self, owner: SMTPTestServer) -> None:
        self._owner = owner

    async def handle_EHLO(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # with an EHLO hook, aiosmtpd leaves this to us
        owner = self._owner
        lines = [r for r in responses if owner.auth or not r.startswith("250-AUTH")]
        if owner.pipelining:
            lines.insert(-1, "250-PIPELINING")  # before the final "250 HELP"
        if owner.dsn:
            lines.insert(-1, "250-DSN")
        return lines

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusals = {a.casefold(): r for a, r in self._owner.faults.refuse_recipients.items()}
        refusal = refusals.get(address.casefold())
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        delay = self._owner.faults.delay_reply_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        data = envelope.original_content or b""
        transport = server.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        rcpt_params = envelope.tk_rcpt_params if isinstance(envelope, _Envelope) else []
        received = ReceivedMessage(
            # aiosmtpd stores the null reverse-path as the literal "<>".
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            # Parse with LF line ends so get_content() gives "\n" text, as for any parsed mail.
            message=BytesParser(policy=default_policy).parsebytes(data.replace(b"\r\n", b"\n")),
            mail_options=list(envelope.mail_options),
            rcpt_options=[list(p) for p in rcpt_params],
            tls=ssl_object is not None,
            tls_version=None if ssl_object is None else ssl_object.version(),
            auth_user=_auth_user(session),
            peer=_peer(session),
        )
        faults = self._owner.faults  # re-read: the test may have changed it during the delay
        if faults.drop_after_data > 0 and isinstance(server, _Session):
            faults.drop_after_data -= 1
            self._owner._record_message(received, accepted=True)
            await server._tk_hang_up(abort=True)
        if faults.transient_failures > 0:
            faults.transient_failures -= 1
            reply = "451 4.3.0 Temporary failure"
        elif faults.permanent_failure:
            reply = f"{faults.permanent_code} 5.7.1 Message rejected"
        else:
            self._owner._record_message(received, accepted=True)
            return "250 OK"
        self._owner._record_message(received, accepted=False)
        return reply
