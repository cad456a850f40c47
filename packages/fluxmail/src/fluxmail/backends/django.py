"""Django email backend: ``EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"``.

It reads the settings of Django's own SMTP backend and adds FluxMail's:

=============================== ============ ===============================================
setting                         default      meaning
=============================== ============ ===============================================
``EMAIL_HOST``                  localhost    the relay (taken literally: no ``host:port``)
``EMAIL_PORT``                  25
``EMAIL_HOST_USER``             ""           AUTH only when user *and* password are non-empty
``EMAIL_HOST_PASSWORD``         ""
``EMAIL_USE_TLS``               False        STARTTLS, required: no silent plaintext fallback
``EMAIL_USE_SSL``               False        implicit TLS (port 465 style)
``EMAIL_TIMEOUT``               None         seconds; None means FluxMail's default, 30
``EMAIL_SSL_CERTFILE``          None         client certificate (and ``EMAIL_SSL_KEYFILE``)
``EMAIL_SSL_KEYFILE``           None
``EMAIL_FLUXMAIL_MAX_RETRIES``  0            retries after a transient failure (4xx, network)
``EMAIL_FLUXMAIL_RETRY_DELAY``  1.0          seconds between attempts
``EMAIL_FLUXMAIL_SSL_CONTEXT``  None         an :class:`ssl.SSLContext`, e.g. for a private CA
=============================== ============ ===============================================

Every one can be overridden per connection, like Django's SMTP backend::

    get_connection(host="smtp.example.com", port=587, use_tls=True, max_retries=3,
                   ssl_context=ssl.create_default_context(cafile="corp-ca.pem"))

It behaves as Django's SMTP backend (``django.core.mail.backends.smtp.EmailBackend``) does, so
code and tests written against that keep working: :meth:`~FluxMailBackend.open` connects (and
logs in) at once and returns True, False when already open, or None when it failed silently;
``.connection`` is the connected :class:`~fluxmail.FluxMail` while open, else None; addresses
go through Django's ``sanitize_address``, so what Django accepts (``"tester"``, IDNA domains) is
accepted and what it refuses raises ``ValueError`` (even with ``fail_silently``); client
certificate files are read when connecting; errors are the standard ones Django's backend
raises (``ConnectionError``, ``ssl.SSLError``, ``smtplib.SMTPException`` subclasses), which
are also :class:`~fluxmail.FluxMailException` with a ``code``.

Settings are read when a backend is constructed, never at import. Unlike Django's SMTP backend,
the retries are applied, a password is never sent over a plaintext connection to a remote host,
and ``EMAIL_TIMEOUT = None`` means FluxMail's 30 seconds, not "wait forever".
"""

from __future__ import annotations

import email.utils
import io
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from email.generator import BytesGenerator
from email.message import Message
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage, sanitize_address

from fluxmail.backends import django_message
from fluxmail.client import FluxMail
from fluxmail.config import EmailInstance, EmailObject
from fluxmail.errors import FluxMailException
from fluxmail.protocol.commands import Envelope

__all__ = ["FluxMailBackend"]

#: FluxMail's own default; Django's ``EMAIL_TIMEOUT = None`` ("wait forever") is not offered.
DEFAULT_TIMEOUT = 30.0

# A logger of our own, passed to FluxMail: a FluxMail built without one resets the level of
# the shared "fluxmail" logger, which would override the project's LOGGING on every connection.
# Like every fluxmail logger it is silent until the project configures logging.
_log = logging.getLogger("fluxmail.backends.django")

_EXCLUSIVE = (
    "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those settings to True."
)


class FluxMailBackend(BaseEmailBackend):
    """Send Django's messages with a :class:`~fluxmail.FluxMail`.

    Keyword arguments override the settings in the module docstring (``None`` means "use the
    setting"). Between :meth:`open` and :meth:`close` (or inside ``with backend:``) every
    :meth:`send_messages` shares one SMTP connection, reopened if it breaks; otherwise each
    call opens and closes its own. Each message gets the mailer's retries.

    ``mailer`` is the :class:`~fluxmail.FluxMail` that sends; ``connection`` is the same
    mailer while a connection is open (Django's name), else None. A backend is thread-safe:
    calls from several threads take turns on its one connection.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        # The same precedence as django.core.mail.backends.smtp.EmailBackend.
        self.host: str = host or settings.EMAIL_HOST
        self.port: int = port or settings.EMAIL_PORT
        self.username: str = settings.EMAIL_HOST_USER if username is None else username
        self.password: str = settings.EMAIL_HOST_PASSWORD if password is None else password
        self.use_tls: bool = settings.EMAIL_USE_TLS if use_tls is None else use_tls
        self.use_ssl: bool = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
        if self.use_tls and self.use_ssl:
            # Django's message; the error is also FluxMail's invalid_config.
            raise FluxMailException(_EXCLUSIVE, "invalid_config")
        self.timeout: float | None = settings.EMAIL_TIMEOUT if timeout is None else timeout
        self.ssl_keyfile: str | None = (
            settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
        )
        self.ssl_certfile: str | None = (
            settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
        )
        # getattr: these are ours, so Django's global_settings has no default for them.
        self.max_retries: int = (
            getattr(settings, "EMAIL_FLUXMAIL_MAX_RETRIES", 0)
            if max_retries is None
            else max_retries
        )
        self.retry_delay: float = (
            getattr(settings, "EMAIL_FLUXMAIL_RETRY_DELAY", 1.0)
            if retry_delay is None
            else retry_delay
        )
        self._given_context = self._check_context(
            getattr(settings, "EMAIL_FLUXMAIL_SSL_CONTEXT", None)
            if ssl_context is None
            else ssl_context
        )
        # Django logs in only when both are set; an empty password means "no AUTH".
        login = bool(self.username and self.password)
        self.mailer = FluxMail(
            EmailObject.SMTP,
            # An EmailInstance is taken literally, so an IPv6 address is not split at a colon.
            EmailInstance(self.host),
            logger=_log,
            port=self.port,
            username=self.username if login else None,
            password=self.password if login else None,
            use_tls=self.use_tls,
            use_ssl=self.use_ssl,
            ssl_context=self._given_context,
            timeout=DEFAULT_TIMEOUT if self.timeout is None else self.timeout,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
        )
        #: The connected mailer between open() and close(); None otherwise (Django's name).
        self.connection: FluxMail | None = None
        self._lock = threading.RLock()

    def _check_context(self, context: object) -> ssl.SSLContext | None:
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise ImproperlyConfigured(
                f"EMAIL_FLUXMAIL_SSL_CONTEXT must be an ssl.SSLContext, not "
                f"{type(context).__name__}"
            )
        if context is not None and (self.ssl_certfile or self.ssl_keyfile):
            # Loading the certificate into the caller's context would change it for everyone
            # who shares it; refuse the ambiguity instead of guessing.
            raise ImproperlyConfigured(
                "EMAIL_SSL_CERTFILE/EMAIL_SSL_KEYFILE and an SSL context were both given; "
                "load the client certificate into the context (load_cert_chain) instead"
            )
        return context

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the next connection uses (Django's name).

        The given one, else, with ``EMAIL_SSL_CERTFILE``, a verifying context carrying the
        client certificate: the files are read here, when connecting, as Django does, so a
        missing file is an error of :meth:`open` (an ``OSError``), not of the constructor.
        """
        if self._given_context is not None or not (self.ssl_certfile or self.ssl_keyfile):
            return self._given_context
        if not self.ssl_certfile:
            raise ImproperlyConfigured("EMAIL_SSL_KEYFILE needs EMAIL_SSL_CERTFILE")
        context = ssl.create_default_context()
        context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def open(self) -> bool | None:
        """Connect (TLS and login included) for the following sends, as Django's backend.

        Returns True if this call opened the connection, False if one was already open, and
        None if connecting failed with ``fail_silently``; otherwise the failure is raised
        (``ConnectionError``, ``ssl.SSLError``, ``smtplib.SMTPException``... each also a
        :class:`~fluxmail.FluxMailException`).
        """
        with self._lock:
            if self.connection is not None:
                return False
            try:
                self.mailer.ssl_context = self.ssl_context
                self._connect()
            except OSError:
                if not self.fail_silently:
                    raise
                return None
            self.connection = self.mailer
            return True

    def _connect(self) -> None:
        """Hold the mailer's connection, with its retries for a transient failure."""
        retry = self.mailer.retry
        attempt = 0
        while True:
            attempt += 1
            self.mailer.__enter__()
            try:
                self.mailer.connect()
            except FluxMailException as exc:
                self.mailer.close()
                if not retry.should_retry(attempt, exc):
                    raise
            else:
                return
            time.sleep(retry.delay)

    def close(self) -> None:
        """QUIT and close the connection, if any. Never raises."""
        with self._lock:
            if self.connection is None:
                return
            try:
                self.connection.close()
            finally:
                self.connection = None

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send each message; return how many were sent.

        A message without recipients is skipped. A failure raises and stops the batch, or
        with ``fail_silently`` skips that message. An address Django refuses raises
        ``ValueError`` in any case, as with Django's backend.
        """
        if not email_messages:
            return 0
        with self._lock:
            opened = self.open()
            if self.connection is None or opened is None:
                return 0  # open() failed silently: sending would be pointless
            try:
                return sum(self._send(message) for message in email_messages)
            finally:
                if opened:
                    self.close()

    def _send(self, message: EmailMessage) -> bool:
        if not message.recipients():
            return False
        encoding = message.encoding or settings.DEFAULT_CHARSET
        # Django's own checks and IDNA encoding: what its SMTP backend accepts, this does.
        sender = _addr_spec(_sanitize(message.from_email, encoding))
        recipients = tuple(
            _addr_spec(_sanitize(address, encoding)) for address in message.recipients()
        )
        data = _message_bytes(message)
        assert self.connection is not None
        try:
            # The envelope comes from the Django message, not the headers: that is where Bcc
            # lives (message() leaves it out of the data).
            self.connection.send_message(data, envelope=Envelope(sender, recipients))
        except ValueError:
            raise  # a bad address or header: never silenced, as with Django's backend
        except FluxMailException as exc:
            if not self.fail_silently:
                raise
            _log.info("Email %r not sent (fail_silently): %s", message.subject, exc)
            return False
        return True


def _sanitize(address: str | tuple[str, str], encoding: str) -> str:
    """Django's ``sanitize_address``, its ValueError raised as FluxMail's ``invalid_email``
    (which is a ValueError too, with Django's message).
    """
    try:
        return sanitize_address(address, encoding)
    except ValueError as exc:
        raise FluxMailException(str(exc), "invalid_email") from exc


def _addr_spec(sanitized: str) -> str:
    """``user@example.com`` from ``sanitize_address``'s ``"Name <user@example.com>"``."""
    return email.utils.parseaddr(sanitized)[1]


def _message_bytes(message: EmailMessage) -> bytes:
    """What goes on the wire: written by FluxMail's writer (:mod:`.django_message`), or by
    Django's ``message()`` for what that cannot express (the reason logged at DEBUG)."""
    try:
        return django_message.wire_bytes(message)
    except django_message.Unsupported as reason:
        _log.debug("Django builds this message itself: %s", reason)
        return _wire_bytes(message.message())


def _wire_bytes(message: Message) -> bytes:
    """The message with CRLF line endings, as Django's SMTP backend sends it.

    Written with a generator rather than ``as_bytes()``: Django < 6 returns its own MIME
    classes, whose ``as_bytes`` takes ``linesep`` but no ``policy``, and Django 6 returns a
    stdlib ``EmailMessage``, whose ``as_bytes`` takes ``policy`` but no ``linesep``.
    """
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False).flatten(message, linesep="\r\n")
    return buffer.getvalue()
