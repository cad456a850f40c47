"""Helpers for your tests: capture what your code sends, without a socket.

::

    from fluxmail.testing import capture

    def test_welcome_mail():
        with capture() as outbox:
            signup("ada@example.com")          # calls FluxMail(...).create(...).send()
        assert len(outbox) == 1
        assert outbox[0].to == ["ada@example.com"]
        assert "Welcome" in outbox[0].subject

While a capture is active every ``FluxMail`` send (sync, async, bulk, Django backend, Outlook)
records the exact bytes it would have sent and reports success; nothing is connected to.
Captures nest: the innermost one receives the mail.

:func:`mock_smtp` is FluxMail 0.3.x's helper, for the tests written against it: it yields a
:class:`unittest.mock.MagicMock` standing for the SMTP connection, on which every session calls
smtplib's method names (``starttls``, ``login``, ``send_message``, ``quit``), so assertions
such as ``smtp.send_message.assert_called_once()`` and side effects such as
``smtp.send_message.side_effect = ConnectionRefusedError()`` keep working. New tests should
prefer :func:`capture`, which checks what was sent rather than which calls were made.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from email.message import EmailMessage
from typing import Any
from unittest import mock

from fluxmail import outbox as _registry
from fluxmail.errors import FluxMailException, SMTPReplyError
from fluxmail.outbox import CapturedEmail, Outbox
from fluxmail.protocol.commands import Envelope, Extensions
from fluxmail.protocol.replies import Reply
from fluxmail.protocol.session import ServerInfo
from fluxmail.protocol.transaction import Outcome
from fluxmail.result import SendResult
from fluxmail.transport import AsyncConnection, SyncConnection
from fluxmail.transport.base import ConnectionBase, reply_args, stdlib_error

__all__ = ["CapturedEmail", "Outbox", "capture", "mock_smtp"]


@contextmanager
def capture() -> Iterator[Outbox]:
    """Capture every message sent inside the block into the yielded :class:`Outbox` list."""
    box = Outbox()
    _registry.push(box)
    try:
        yield box
    finally:
        _registry.pop(box)


@contextmanager
def mock_smtp() -> Iterator[mock.MagicMock]:
    """Replace FluxMail's SMTP connections with the yielded mock for the block (0.3.x's API).

    As in 0.3.x, this replaces ``fluxmail._transport.smtplib.SMTP`` with a mock class whose
    instance is yielded; tests that patch that name themselves get the same routing. Every
    connection opened inside the block, sync or async, by ``FluxMail``, ``BulkSender``, the
    pools or the Django backend, talks to the mock instead of a server: opening calls
    ``starttls(context=...)`` when STARTTLS is configured and ``login(username, password)``
    when there are credentials; each message calls ``send_message(msg)`` with the message
    parsed into an :class:`email.message.EmailMessage`; closing calls ``quit()``. An exception
    the mock raises is reported as the matching FluxMail error (an ``OSError`` as a connection
    error, an smtplib reply error as :class:`~fluxmail.SMTPReplyError`), so retries and
    ``send_failed`` behave as they would against a server.
    """
    smtp = mock.MagicMock(name="smtp")
    with mock.patch("fluxmail._transport.smtplib.SMTP", mock.MagicMock(return_value=smtp)):
        yield smtp


class _LegacySession:
    """One connection's smtplib-style (or aiosmtplib-style) stand-in and how to talk to it."""

    def __init__(self, smtp: Any, *, awaited: bool) -> None:
        self.smtp = smtp
        self.awaited = awaited

    async def call(self, result: Any) -> Any:
        return await result if self.awaited else result


class _LegacyRouting:
    """While a name of :mod:`fluxmail._transport` is replaced, sessions go to the replacement.

    Installs, on the connection classes, methods that open an smtplib-style session through
    the replacement (``SMTP(host, port, timeout=...)``, ``SMTP_SSL(..., context=...)`` or
    aiosmtplib's ``SMTP(hostname=..., ...)``) and fall back to the real methods for a
    connection no replacement applies to. Reference-counted: nested patches are fine.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.saved: list[tuple[type, str, Any]] = []

    def acquire(self) -> None:
        self.depth += 1
        if self.depth == 1:
            self._install()

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            for cls, name, original in reversed(self.saved):
                setattr(cls, name, original)
            self.saved.clear()

    def _install(self) -> None:
        sync_open, async_open = SyncConnection.open, AsyncConnection.open
        replaced: dict[type, dict[str, Any]] = {SyncConnection: {}, AsyncConnection: {}}

        def session(conn: ConnectionBase) -> _LegacySession | None:
            found = conn.__dict__.get("_legacy_session")
            return found if isinstance(found, _LegacySession) else None

        def original(cls: type, name: str) -> Any:
            return next(o for c, n, o in self.saved if c is cls and n == name)

        def sync_open_(conn: SyncConnection) -> ServerInfo:
            smtp = _sync_factory(conn)
            if smtp is None:
                return sync_open(conn)
            return _open_sync_style(conn, smtp)

        async def async_open_(conn: AsyncConnection) -> ServerInfo:
            from fluxmail import _transport

            factory = _transport.aiosmtplib.replacement("SMTP")
            if factory is None:
                smtp = _sync_factory(conn)
                if smtp is None:
                    return await async_open(conn)
                return _open_sync_style(conn, smtp)
            settings = conn.settings
            implicit = settings.plan.tls_mode == "ssl"
            with _errors(conn, connecting=True):
                smtp = factory(
                    hostname=settings.host,
                    port=settings.port,
                    use_tls=implicit,
                    tls_context=settings.ssl_context if implicit else None,
                    timeout=settings.timeout,
                )
                await smtp.__aenter__()
                conn.__dict__["_legacy_session"] = _LegacySession(smtp, awaited=True)
                if settings.plan.tls_mode == "starttls":
                    await smtp.starttls(context=settings.ssl_context)
                if settings.plan.credentials is not None:
                    creds = settings.plan.credentials
                    await smtp.login(creds.username, creds.password)
            return _opened(conn)

        def sync_send(conn: SyncConnection, envelope: Envelope, message: bytes) -> SendResult:
            legacy = session(conn)
            if legacy is None:
                return original(SyncConnection, "send")(conn, envelope, message)  # type: ignore[no-any-return]
            with _errors(conn, connecting=False):
                refused = legacy.smtp.send_message(_parsed(message))
            return _result(conn, refused, envelope)

        async def async_send(
            conn: AsyncConnection, envelope: Envelope, message: bytes
        ) -> SendResult:
            legacy = session(conn)
            if legacy is None:
                return await original(AsyncConnection, "send")(conn, envelope, message)  # type: ignore[no-any-return]
            with _errors(conn, connecting=False):
                refused = await legacy.call(legacy.smtp.send_message(_parsed(message)))
            return _result(conn, refused, envelope)

        def sync_send_many(
            conn: SyncConnection,
            items: Sequence[tuple[Envelope, bytes]],
            outcomes: dict[int, Outcome],
        ) -> None:
            if session(conn) is None:
                original(SyncConnection, "send_many")(conn, items, outcomes)
                return
            for index, (envelope, message) in enumerate(items):
                try:
                    outcomes[index] = sync_send(conn, envelope, message)
                except SMTPReplyError as exc:
                    outcomes[index] = exc

        async def async_send_many(
            conn: AsyncConnection,
            items: Sequence[tuple[Envelope, bytes]],
            outcomes: dict[int, Outcome],
        ) -> None:
            if session(conn) is None:
                await original(AsyncConnection, "send_many")(conn, items, outcomes)
                return
            for index, (envelope, message) in enumerate(items):
                try:
                    outcomes[index] = await async_send(conn, envelope, message)
                except SMTPReplyError as exc:
                    outcomes[index] = exc

        def sync_noop(conn: SyncConnection) -> Reply:
            if session(conn) is None:
                return original(SyncConnection, "noop")(conn)  # type: ignore[no-any-return]
            return Reply(250, ("OK",))

        async def async_noop(conn: AsyncConnection) -> Reply:
            if session(conn) is None:
                return await original(AsyncConnection, "noop")(conn)  # type: ignore[no-any-return]
            return Reply(250, ("OK",))

        def sync_close(conn: SyncConnection) -> None:
            legacy = conn.__dict__.pop("_legacy_session", None)
            if legacy is None:
                original(SyncConnection, "close")(conn)
                return
            conn.info = None
            # As 0.3.x did: a failed QUIT changes nothing about what was sent.
            with suppress(Exception):
                legacy.smtp.quit()

        async def async_close(conn: AsyncConnection) -> None:
            legacy = conn.__dict__.pop("_legacy_session", None)
            if legacy is None:
                await original(AsyncConnection, "close")(conn)
                return
            conn.info = None
            with suppress(Exception):
                if legacy.awaited:
                    await legacy.smtp.__aexit__(None, None, None)
                else:
                    legacy.smtp.quit()

        def is_open(cls: type) -> property:
            real = original(cls, "is_open")
            return property(
                lambda conn: conn.info is not None if session(conn) else real.fget(conn)
            )

        replaced[SyncConnection] = {
            "open": sync_open_,
            "send": sync_send,
            "send_many": sync_send_many,
            "noop": sync_noop,
            "close": sync_close,
        }
        replaced[AsyncConnection] = {
            "open": async_open_,
            "send": async_send,
            "send_many": async_send_many,
            "noop": async_noop,
            "close": async_close,
        }
        for cls, methods in replaced.items():
            for name in (*methods, "is_open"):
                self.saved.append((cls, name, cls.__dict__[name]))
            for name, method in methods.items():
                setattr(cls, name, method)
            setattr(cls, "is_open", is_open(cls))  # noqa: B010 - a property, set on the class


_legacy_routing = _LegacyRouting()


def _sync_factory(conn: ConnectionBase) -> Any | None:
    """The smtplib-style connection object for ``conn``, if ``SMTP``/``SMTP_SSL`` is replaced.

    An implicit-TLS session uses a replaced ``SMTP_SSL``, else a replaced ``SMTP`` (so
    ``mock_smtp`` covers every session); None when neither is replaced.
    """
    from fluxmail import _transport

    settings = conn.settings
    ssl_factory = _transport.smtplib.replacement("SMTP_SSL")
    plain_factory = _transport.smtplib.replacement("SMTP")
    with _errors(conn, connecting=True):
        if settings.plan.tls_mode == "ssl" and ssl_factory is not None:
            return ssl_factory(
                settings.host, settings.port, context=settings.ssl_context, timeout=settings.timeout
            )
        if plain_factory is not None:
            return plain_factory(settings.host, settings.port, timeout=settings.timeout)
    return None


def _open_sync_style(conn: ConnectionBase, smtp: Any) -> ServerInfo:
    plan = conn.settings.plan
    conn.__dict__["_legacy_session"] = _LegacySession(smtp, awaited=False)
    with _errors(conn, connecting=True):
        if plan.tls_mode == "starttls":
            smtp.starttls(context=conn.settings.ssl_context)
        if plan.credentials is not None:
            smtp.login(plan.credentials.username, plan.credentials.password)
    return _opened(conn)


def _opened(conn: ConnectionBase) -> ServerInfo:
    plan = conn.settings.plan
    conn.info = ServerInfo(
        Reply(220, ("mock_smtp ready",)),
        Extensions({"PIPELINING": "", "8BITMIME": "", "SMTPUTF8": ""}),
        plan.tls_mode != "none",
        "PLAIN" if plan.credentials is not None else None,
    )
    return conn.info


def _parsed(message: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _result(conn: ConnectionBase, refused: object, envelope: Envelope) -> SendResult:
    conn.messages_sent += 1
    # smtplib's send_message returns the refused recipients; a mock returns a MagicMock.
    bad = refused if isinstance(refused, dict) else {}
    replies = {addr: Reply(*reply_args(value)) for addr, value in bad.items()}
    accepted = tuple(r for r in envelope.recipients if r not in replies)
    return SendResult(accepted=accepted, refused=replies)


@contextmanager
def _errors(conn: ConnectionBase, *, connecting: bool) -> Iterator[None]:
    """Report what the stand-in raised as the FluxMail error a real session would raise."""
    try:
        yield
    except FluxMailException:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise stdlib_error(exc, conn.settings, connecting=connecting) from exc
