"""``FluxMail``: the contract's mailer. Build a message with ``create()``, then ``send()`` it.

One instance sends many messages: each ``create()`` starts a fresh one. Inside ``with`` (or
``async with``) every send shares one connection, reopened if it broke; outside, each send
opens and closes its own.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from email.policy import SMTP
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from fluxmail import outbox
from fluxmail.addresses import is_email, parse_address
from fluxmail.config import EmailInstance, EmailObject, parse_host, settings_from_env
from fluxmail.errors import FluxMailException, send_failed
from fluxmail.legacy import LegacyAttributes, check_number, coerce_int, remembers_arguments
from fluxmail.logs import Log, level_view
from fluxmail.mailer_transport import MailerTransport
from fluxmail.message import Draft, MessageSpec, build, preview
from fluxmail.pool import AsyncSMTPPool, PoolOptions, SMTPPool
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.ops import Credentials
from fluxmail.protocol.session import SessionPlan, TLSMode
from fluxmail.result import SendResult
from fluxmail.retry import RetryPolicy
from fluxmail.transport import AsyncConnection, ConnectionSettings, SyncConnection
from fluxmail.transport.base import (
    ATTEMPT_ERRORS,
    Resolver,
    is_loopback,
    local_hostname,
    stdlib_error,
)

if TYPE_CHECKING:
    from fluxmail.dkim import DKIMSigner

SUCCESS = "Email sent successfully via SMTP."
OUTLOOK_SUCCESS = "Email sent successfully via Outlook."


class FluxMail(LegacyAttributes):
    """Send email through an SMTP relay (or Outlook desktop on Windows).

    ``host`` is ``"relay"``, ``"relay:domain"``, ``"relay:port"`` or an :class:`EmailInstance`.
    ``use_tls`` means STARTTLS (a server that does not offer it fails the send); ``use_ssl``
    means implicit TLS. ``max_retries`` further attempts follow a transient failure,
    ``retry_delay`` seconds apart. ``sender`` is the default From of every ``create()``.

    A ``username`` without a ``password`` logs in to nothing: it only serves as the default
    sender when it is an address (relays that trust the network need no AUTH).

    Beyond the contract: ``allow_plaintext_auth`` lets a password go over a connection without
    TLS to a non-loopback host (refused by default); ``local_hostname`` is the EHLO name;
    ``oauth2_token`` (a token, or a callable that returns a fresh one) logs in with XOAUTH2 as
    ``username``; ``min_tls_version`` ("TLSv1.2", "TLSv1.3" or an ``ssl.TLSVersion``) refuses
    older TLS, also on a given ``ssl_context``, which it raises if needed; ``dkim``
    (a :class:`~fluxmail.dkim.DKIMSigner`) signs every message sent; ``resolve(host, port)``
    replaces the system's name lookup for every connection (return the IP addresses to try;
    raise ``OSError`` to refuse): the connection goes to what it returned and TLS still checks
    the certificate against the host name (see :class:`~fluxmail.transport.ConnectionSettings`).
    """

    def __init__(
        self,
        object_type: EmailObject | str,
        host: str | EmailInstance,
        logger: logging.Logger | None = None,
        log_level: str | int = "WARNING",
        port: int | str = 25,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        use_ssl: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 30,
        max_retries: int | str = 0,
        retry_delay: float = 1.0,
        *,
        sender: str | None = None,
        allow_plaintext_auth: bool = False,
        local_hostname: str | None = None,
        oauth2_token: str | Callable[[], str] | None = None,
        min_tls_version: ssl.TLSVersion | str | None = None,
        dkim: DKIMSigner | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        if use_tls and use_ssl:
            raise FluxMailException(
                "use_tls (STARTTLS) and use_ssl (implicit TLS) exclude each other; pick one",
                "invalid_config",
            )
        self.object_type = EmailObject.parse(object_type)
        if logger is not None and not isinstance(logger, logging.Logger):
            raise FluxMailException("logger must be a logging.Logger", "invalid_config")
        # Without a logger of the caller's, log_level filters this mailer's records only; the
        # level the application configured on "fluxmail" is never changed.
        self.logger: Log
        if logger is not None:
            self.logger = logger
        else:
            try:
                self.logger = level_view(log_level)
            except (ValueError, TypeError) as exc:
                raise FluxMailException(
                    f"Unknown log_level {log_level!r}; use DEBUG, INFO, WARNING or ERROR",
                    "invalid_config",
                ) from exc
        spec = parse_host(host)
        self.relay, self.domain = spec.relay, spec.domain
        self.port = spec.port if spec.port is not None else coerce_int(port, "port", 1, 65535)
        self.username = username
        self._credentials = _credentials(username, password, oauth2_token)
        self.min_tls_version = _tls_version(min_tls_version)
        self.dkim = dkim
        self.resolve = resolve
        self.use_tls, self.use_ssl, self.ssl_context = use_tls, use_ssl, ssl_context
        # None waits without limit, as 0.3.x (and smtplib) did.
        self.timeout = None if timeout is None else check_number(timeout, "timeout", positive=True)
        self.retry = RetryPolicy(
            coerce_int(max_retries, "max_retries", 0, 1000),
            check_number(retry_delay, "retry_delay"),
        )
        self.log_level = log_level
        #: The From of every create() without sender= (``sender`` is 0.3.x's view of it).
        self.default_sender = sender
        self.allow_plaintext_auth = allow_plaintext_auth
        self.local_hostname = local_hostname
        self.last_result: SendResult | None = None
        self._draft: Draft | None = None
        self._in_context = False
        self._conn: SyncConnection | None = None
        self._aconn: AsyncConnection | None = None
        #: Where every SMTP attempt and the mailer's own connections go (0.3.x's name).
        self._transport = MailerTransport(self)
        if self.object_type is EmailObject.OUTLOOK:
            from fluxmail.outlook import OutlookMailer

            self._outlook: OutlookMailer | None = OutlookMailer(self.logger)
        else:
            self._outlook = None

    @classmethod
    def from_env(cls, **overrides: Any) -> FluxMail:
        """Build from the ``FLUXMAIL_*`` environment variables; keyword arguments override."""
        return cls(**{**settings_from_env(), **overrides})

    def __repr__(self) -> str:
        return (
            f"FluxMail({self.object_type.value!r}, relay={self.relay!r}, port={self.port}, "
            f"username={self.username!r}, use_tls={self.use_tls}, use_ssl={self.use_ssl})"
        )

    # -- building ---------------------------------------------------------------------------

    @remembers_arguments
    def create(
        self,
        subject: str,
        recipients: list[str],
        body: str,
        sender: str | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        reply_to: str | None = None,
        attachments: list[str] | None = None,
        html_body: bool = False,
        plain_body: str | None = None,
        in_reply_to: str | None = None,
        references: str | list[str] | None = None,
        priority: str | None = None,
        unsubscribe_url: str | None = None,
        inline_images: dict[str, str] | None = None,
        inline_css: bool = False,
        *,
        headers: dict[str, str] | None = None,
        dsn_notify: list[str] | None = None,
        dsn_ret: str | None = None,
        dsn_envid: str | None = None,
    ) -> Self:
        """Start a fresh message; returns self so ``create(...).send()`` chains.

        Raises FluxMailException with the contract's code for every bad argument. Beyond the
        contract: ``headers`` adds custom headers; ``dsn_notify`` (SUCCESS, FAILURE, DELAY or
        NEVER), ``dsn_ret`` (FULL or HDRS) and ``dsn_envid`` request delivery status
        notifications from relays that offer DSN.
        """
        self._draft = None
        spec = MessageSpec(
            subject=subject,
            recipients=recipients,
            body=body,
            sender=self._resolve_sender(sender),
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            attachments=attachments,
            html_body=html_body,
            plain_body=plain_body,
            in_reply_to=in_reply_to,
            references=references,
            priority=priority,
            unsubscribe_url=unsubscribe_url,
            inline_images=inline_images,
            inline_css=inline_css,
            headers=headers,
            dsn_notify=_notify(dsn_notify),
            dsn_ret=dsn_ret,
            dsn_envid=dsn_envid,
        )
        self._draft = build(spec, id_domain=self.domain or None)
        return self

    def _resolve_sender(self, sender: str | None) -> str | None:
        """Explicit sender, then the constructor's, then the username if it is an address."""
        for candidate in (sender, self.default_sender):
            if candidate is not None:
                return candidate
        if self.username and is_email(self.username):
            return self.username
        if self.object_type is EmailObject.OUTLOOK:
            return None  # Outlook sends from its default account
        raise FluxMailException(
            "sender is required: pass sender= to create() or FluxMail(), or log in with an "
            "email address as username",
            "sender_required",
        )

    def display(self) -> str:
        """``"Email Preview:\\n"`` and the whole message; Outlook opens its compose window."""
        draft = self._require_draft()
        if self._outlook is not None:
            return self._outlook.display(draft)
        return "Email Preview:\n" + preview(self._wire(draft))

    # -- sending ----------------------------------------------------------------------------

    def send(self, dry_run: bool = False) -> str:
        """Send the message built by ``create()``; ``dry_run`` returns the preview instead."""
        draft = self._check_sendable()
        if dry_run:
            return "Email Preview:\n" + preview(self._wire(draft))
        if self._outlook is not None:
            return self._send_outlook(draft)
        self._deliver(draft.envelope, self._wire(draft))
        return SUCCESS

    async def send_async(self, dry_run: bool = False) -> str:
        """``send()`` as a coroutine: the same checks, retries and result, on asyncio."""
        draft = self._check_sendable()
        if dry_run:
            return "Email Preview:\n" + preview(self._wire(draft))
        if self._outlook is not None:
            raise FluxMailException(
                "Outlook cannot send asynchronously; call send() instead", "outlook_no_async"
            )
        await self._deliver_async(draft.envelope, self._wire(draft))
        return SUCCESS

    def _wire(self, draft: Draft) -> bytes:
        """The draft's bytes as they go on the wire: DKIM-signed once, so ``display()`` and
        every send and retry of this draft carry the very same bytes."""
        if self.dkim is None:
            return draft.data
        if draft.signed is None:
            draft.signed = self.dkim.sign(draft.data)
        return draft.signed

    def send_message(
        self, message: EmailMessage | bytes, *, envelope: Envelope | None = None
    ) -> SendResult:
        """Send an already-built message with this mailer's connection and retry policy.

        Without ``envelope`` the sender comes from the message's From and the recipients from
        To, Cc and Bcc; a Bcc header is removed before sending. Returns who was accepted and
        refused; raises ``send_failed`` (chained) when every attempt failed.
        """
        return self._deliver(*self._prepare(message, envelope))

    def _deliver(self, envelope: Envelope, data: bytes) -> SendResult:
        """Send final wire bytes with this mailer's connection and retry policy."""
        if (captured := self._captured(envelope, data)) is not None:
            return captured
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._remember(_reported(self._transport.send((envelope, data)), envelope))
            except ATTEMPT_ERRORS as exc:
                delay = self._retry_delay(self._attempt_error(exc), attempt)
            time.sleep(delay)

    async def send_message_async(
        self, message: EmailMessage | bytes, *, envelope: Envelope | None = None
    ) -> SendResult:
        """:meth:`send_message` as a coroutine."""
        return await self._deliver_async(*self._prepare(message, envelope))

    async def _deliver_async(self, envelope: Envelope, data: bytes) -> SendResult:
        """:meth:`_deliver` as a coroutine: the same decisions, awaited."""
        if (captured := self._captured(envelope, data)) is not None:
            return captured
        attempt = 0
        while True:
            attempt += 1
            try:
                sent = await self._transport.send_async((envelope, data))
                return self._remember(_reported(sent, envelope))
            except ATTEMPT_ERRORS as exc:
                delay = self._retry_delay(self._attempt_error(exc), attempt)
            await asyncio.sleep(delay)

    def _captured(self, envelope: Envelope, data: bytes) -> SendResult | None:
        """With :func:`fluxmail.testing.capture` active: record instead of sending."""
        if (box := outbox.active()) is None:
            return None
        box.record(envelope, data)
        return self._remember(SendResult(accepted=envelope.recipients))

    def _attempt_error(self, exc: BaseException) -> FluxMailException:
        """What a failed attempt raised, as a FluxMail error: the transport's own are; what a
        replaced ``_transport`` raised in 0.3.x's manner (smtplib, ``OSError``) is mapped."""
        if isinstance(exc, FluxMailException):
            return exc
        return stdlib_error(exc, self._settings(), connecting=False)

    def _retry_delay(self, exc: FluxMailException, attempt: int) -> float:
        """After attempt number ``attempt`` failed with ``exc``: the seconds to wait before
        the next, or ``send_failed`` (chained) when there is none."""
        if not self.retry.should_retry(attempt, exc):
            raise self._send_failed(exc, attempt) from exc
        self._log_retry(exc, attempt)
        return self.retry.delay

    def _prepare(
        self, message: EmailMessage | bytes, envelope: Envelope | None
    ) -> tuple[Envelope, bytes]:
        """Envelope and final wire bytes, DKIM-signed once (not once per retry)."""
        envelope, data = _prepare(message, envelope)
        return envelope, self.dkim.sign(data) if self.dkim is not None else data

    def test_connection(self) -> dict[str, Any]:
        """Connect, upgrade TLS, authenticate and QUIT without sending anything.

        Returns ``{"ok": True, "relay", "port", "latency_ms"}``; raises ``connection_failed``
        chained to the precise cause (whose ``code`` says what to fix).
        """
        if self._outlook is not None:
            self._outlook.connect()
            return {"ok": True, "relay": "outlook", "port": None, "latency_ms": 0}
        self._require_relay()
        started = time.perf_counter()
        try:
            conn = self._transport._make_connection()
        except ATTEMPT_ERRORS as exc:
            raise FluxMailException(
                f"Could not connect to {self.relay}:{self.port}: {exc}", "connection_failed"
            ) from exc
        info = conn.info
        conn.close()
        assert info is not None  # set by a successful open
        latency = round((time.perf_counter() - started) * 1000)
        return {
            "ok": True,
            "relay": self.relay,
            "port": self.port,
            "latency_ms": latency,
            "tls": info.tls,
            "auth": info.auth_mechanism,
            "extensions": sorted(info.extensions.keywords),
        }

    # -- pools ------------------------------------------------------------------------------

    def pool(self, **options: Any) -> SMTPPool:
        """A thread-safe connection pool with this mailer's relay, TLS, login and retries.

        ``options`` are :class:`~fluxmail.pool.PoolOptions` fields (max_connections,
        max_messages_per_connection, idle_timeout, batch_size, rate_limit).
        """
        return SMTPPool(self._settings, self.retry, PoolOptions(**options))

    def async_pool(self, **options: Any) -> AsyncSMTPPool:
        """The asyncio twin of :meth:`pool`."""
        return AsyncSMTPPool(self._settings, self.retry, PoolOptions(**options))

    @contextmanager
    def _session_pool(self, **options: Any) -> Iterator[SMTPPool]:
        """:meth:`pool`, sharing this mailer's ``with`` session when there is one: its open
        connection is lent to the pool and the pool's connection kept for later sends, so a
        bulk send inside ``with`` uses the same connection as the sends around it."""
        pool = self.pool(**options)
        if not self._in_context:
            with pool:
                yield pool
            return
        if self._conn is not None and self._conn.is_open:
            pool.adopt(self._conn)
        self._conn = None
        try:
            yield pool
        finally:
            kept = pool.release()
            if kept and self._in_context:
                self._conn = kept.pop(0)
            for conn in kept:
                conn.close()

    @asynccontextmanager
    async def _async_session_pool(self, **options: Any) -> AsyncIterator[AsyncSMTPPool]:
        """The asyncio twin of :meth:`_session_pool` (shares the ``async with`` session)."""
        pool = self.async_pool(**options)
        if not self._in_context:
            async with pool:
                yield pool
            return
        if self._aconn is not None and self._aconn.is_open:
            pool.adopt(self._aconn)
        self._aconn = None
        try:
            yield pool
        finally:
            kept = pool.release()
            if kept and self._in_context:
                self._aconn = kept.pop(0)
            for conn in kept:
                await conn.close()

    def _draft_bytes(self) -> tuple[Envelope, bytes]:
        """The envelope and wire bytes (DKIM-signed if configured) of the last ``create()``."""
        draft = self._check_sendable()
        return draft.envelope, self._wire(draft)

    # -- persistent connections -------------------------------------------------------------

    @property
    def in_context(self) -> bool:
        """True inside ``with``/``async with``: sends share one connection."""
        return self._in_context

    def __enter__(self) -> Self:
        self._in_context = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        self._in_context = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the persistent connections, if any; later sends open their own."""
        self._in_context = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._aconn is not None:  # no loop to QUIT on from here: just drop it
            self._aconn.abort()
            self._aconn = None

    def connect(self) -> None:
        """Inside ``with``: open the shared connection now instead of at the first send.

        Raises the connection's error (refused, TLS, AUTH...) here, so a caller can tell a
        relay that is down before building any message. Does nothing while a
        :func:`fluxmail.testing.capture` is active or when the connection is already open.
        """
        if not self._in_context:
            raise FluxMailException(
                "connect() holds a connection: call it inside with", "not_connected"
            )
        self._require_relay()
        if outbox.active() is not None or (self._conn is not None and self._conn.is_open):
            return
        self._conn = self._transport._make_connection()

    async def aclose(self) -> None:
        """Close the persistent connections politely (QUIT), if any."""
        self._in_context = False
        if self._aconn is not None:
            await self._aconn.close()
            self._aconn = None
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _settings(self) -> ConnectionSettings:
        tls: TLSMode = "ssl" if self.use_ssl else "starttls" if self.use_tls else "none"
        plan = SessionPlan(
            local_hostname=self.local_hostname or local_hostname(),
            tls_mode=tls,
            credentials=self._credentials,
            plaintext_auth=self.allow_plaintext_auth or is_loopback(self.relay),
        )
        return ConnectionSettings(
            self.relay,
            self.port,
            plan,
            self.timeout,
            self.ssl_context,
            self.logger,
            self.min_tls_version,
            self.resolve,
        )

    def _require_draft(self) -> Draft:
        if self._draft is None:
            raise FluxMailException("Call create() before sending or displaying", "not_created")
        return self._draft

    def _require_relay(self) -> None:
        if not self.relay:
            raise FluxMailException("No relay host configured", "no_relay")

    def _check_sendable(self) -> Draft:
        draft = self._require_draft()
        if self._outlook is None:
            self._require_relay()
        return draft

    def _send_outlook(self, draft: Draft) -> str:
        assert self._outlook is not None
        if (box := outbox.active()) is not None:
            box.record(draft.envelope, draft.data, via="outlook")
        else:
            self._outlook.send(draft)
        return OUTLOOK_SUCCESS

    def _remember(self, result: SendResult) -> SendResult:
        self.last_result = result
        if result.refused:
            self.logger.warning(
                "Relay refused %d of %d recipients: %s",
                len(result.refused),
                len(result.refused) + len(result.accepted),
                ", ".join(f"{a} ({r})" for a, r in result.refused.items()),
            )
        return result

    def _log_retry(self, exc: FluxMailException, attempt: int) -> None:
        self.logger.warning(
            "Send attempt %d of %d failed (%s); retrying in %g s",
            attempt,
            self.retry.attempts,
            exc,
            self.retry.delay,
        )

    def _send_failed(self, exc: FluxMailException, attempts: int) -> FluxMailException:
        plural = "s" if attempts != 1 else ""
        return send_failed(
            f"Failed to send email via SMTP after {attempts} attempt{plural}: {exc}", exc
        )


def _reported(result: SendResult | None, envelope: Envelope) -> SendResult:
    """What an attempt that did not raise reported. FluxMail's transport returns who was
    accepted and refused; a replaced ``_transport`` in 0.3.x's manner returns nothing, which
    meant every recipient was accepted."""
    return result if isinstance(result, SendResult) else SendResult(accepted=envelope.recipients)


def _prepare(message: EmailMessage | bytes, envelope: Envelope | None) -> tuple[Envelope, bytes]:
    """The envelope and wire bytes of a ready-made message (Bcc moved to the envelope)."""
    if isinstance(message, bytes):
        if envelope is None:
            raise FluxMailException("Raw bytes need an explicit envelope", "invalid_params")
        return envelope, message
    if envelope is None:
        senders = email.utils.getaddresses(message.get_all("From", []))
        recipients = email.utils.getaddresses(
            [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
        )
        sender = parse_address(senders[0][1] if senders else "", role="sender").addr_spec
        addrs = tuple(parse_address(a, role="recipient").addr_spec for _, a in recipients if a)
        envelope = Envelope(sender, addrs)
    if "Bcc" in message:
        message = _copy_without_bcc(message)
    return envelope, message.as_bytes(policy=SMTP)


def _copy_without_bcc(message: EmailMessage) -> EmailMessage:
    # A shallow copy shares the payload; deleting a header rebinds the copy's header list, so
    # the caller's message keeps its Bcc.
    stripped = copy.copy(message)
    del stripped["Bcc"]
    return stripped


def _notify(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise FluxMailException(
            "dsn_notify must be a list such as ['FAILURE', 'DELAY']", "invalid_params"
        )
    return tuple(value)


def _credentials(
    username: str | None, password: str | None, token: str | Callable[[], str] | None
) -> Credentials | None:
    """What to log in with; None when nothing was given (the relay trusts us)."""
    if token is not None:
        if not username:
            raise FluxMailException("oauth2_token needs the account as username", "invalid_config")
        source = token if callable(token) else (lambda: token)
        return Credentials(username, oauth2_token=source)
    if username and password is not None:
        return Credentials(username, password)
    return None


def _tls_version(value: ssl.TLSVersion | str | None) -> ssl.TLSVersion | None:
    if value is None or isinstance(value, ssl.TLSVersion):
        return value
    if not isinstance(value, str):
        raise FluxMailException(
            f"min_tls_version must be a string such as 'TLSv1.2', got {value!r}",
            "invalid_config",
        )
    number = value.strip().upper().replace("_", ".").removeprefix("TLSV")
    if number not in _TLS_VERSIONS:
        raise FluxMailException(
            f"min_tls_version {value!r} is not a TLS version; use 'TLSv1.2' or 'TLSv1.3'",
            "invalid_config",
        )
    return _TLS_VERSIONS[number]


_TLS_VERSIONS = {
    "1": ssl.TLSVersion.TLSv1,
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
