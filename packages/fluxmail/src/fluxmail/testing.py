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
import ssl
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any
from unittest import mock

from fluxmail import outbox as _registry
from fluxmail.errors import FluxMailException, RecipientsRefused, SMTPReplyError
from fluxmail.outbox import CapturedEmail, Outbox
from fluxmail.protocol.commands import Envelope, Extensions
from fluxmail.protocol.replies import Reply
from fluxmail.protocol.session import ServerInfo
from fluxmail.protocol.transaction import Outcome
from fluxmail.result import SendResult
from fluxmail.transport import AsyncConnection, SyncConnection
from fluxmail.transport.base import ConnectionBase

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

    Every connection opened inside the block, sync or async, by ``FluxMail``, ``BulkSender``,
    the pools or the Django backend, talks to the one mock instead of a server: opening calls
    ``starttls(context=...)`` when STARTTLS is configured and ``login(username, password)``
    when there are credentials; each message calls ``send_message(msg)`` with the message
    parsed into an :class:`email.message.EmailMessage`; closing calls ``quit()``. An exception
    the mock raises is reported as the matching FluxMail error (an ``OSError`` as a connection
    error, an smtplib reply error as :class:`~fluxmail.SMTPReplyError`), so retries and
    ``send_failed`` behave as they would against a server.
    """
    smtp = mock.MagicMock(name="smtp")
    fake = _FakeSession(smtp)
    with ExitStack() as stack:
        for cls in (SyncConnection, AsyncConnection):
            asynchronous = cls is AsyncConnection
            for name, method in fake.methods(asynchronous).items():
                stack.enter_context(mock.patch.object(cls, name, method))
            stack.enter_context(
                mock.patch.object(cls, "is_open", property(lambda conn: conn.info is not None))
            )
        yield smtp


class _FakeSession:
    """The connection methods :func:`mock_smtp` installs, all reporting to one mock."""

    def __init__(self, smtp: mock.MagicMock) -> None:
        self.smtp = smtp

    def methods(self, asynchronous: bool) -> dict[str, Any]:
        # Plain functions, not bound methods: set on the class, they receive the connection.
        if not asynchronous:

            def open_(conn: ConnectionBase) -> ServerInfo:
                return self.open(conn)

            def send(conn: ConnectionBase, envelope: Envelope, message: bytes) -> SendResult:
                return self.send(conn, envelope, message)

            def send_many(
                conn: ConnectionBase,
                items: Sequence[tuple[Envelope, bytes]],
                outcomes: dict[int, Outcome],
            ) -> None:
                self.send_many(conn, items, outcomes)

            def noop(conn: ConnectionBase) -> Reply:
                return Reply(250, ("OK",))

            def close(conn: ConnectionBase) -> None:
                self.close(conn)

            return {
                "open": open_,
                "send": send,
                "send_many": send_many,
                "noop": noop,
                "close": close,
            }

        async def aopen(conn: ConnectionBase) -> ServerInfo:
            return self.open(conn)

        async def asend(conn: ConnectionBase, envelope: Envelope, message: bytes) -> SendResult:
            return self.send(conn, envelope, message)

        async def asend_many(
            conn: ConnectionBase,
            items: Sequence[tuple[Envelope, bytes]],
            outcomes: dict[int, Outcome],
        ) -> None:
            self.send_many(conn, items, outcomes)

        async def anoop(conn: ConnectionBase) -> Reply:
            return Reply(250, ("OK",))

        async def aclose(conn: ConnectionBase) -> None:
            self.close(conn)

        return {
            "open": aopen,
            "send": asend,
            "send_many": asend_many,
            "noop": anoop,
            "close": aclose,
        }

    def open(self, conn: ConnectionBase) -> ServerInfo:
        plan = conn.settings.plan
        with self._errors(conn, connecting=True):
            if plan.tls_mode == "starttls":
                self.smtp.starttls(context=conn.settings.ssl_context)
            if plan.credentials is not None:
                self.smtp.login(plan.credentials.username, plan.credentials.password)
        conn.info = ServerInfo(
            Reply(220, ("mock_smtp ready",)),
            Extensions({"PIPELINING": "", "8BITMIME": "", "SMTPUTF8": ""}),
            plan.tls_mode != "none",
            "PLAIN" if plan.credentials is not None else None,
        )
        return conn.info

    def send(self, conn: ConnectionBase, envelope: Envelope, message: bytes) -> SendResult:
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        with self._errors(conn, connecting=False):
            refused = self.smtp.send_message(parsed)
        conn.messages_sent += 1
        # smtplib's send_message returns the refused recipients; a mock returns a MagicMock.
        bad = refused if isinstance(refused, dict) else {}
        replies = {addr: Reply(*_reply_args(value)) for addr, value in bad.items()}
        accepted = tuple(r for r in envelope.recipients if r not in replies)
        return SendResult(accepted=accepted, refused=replies)

    def send_many(
        self,
        conn: ConnectionBase,
        items: Sequence[tuple[Envelope, bytes]],
        outcomes: dict[int, Outcome],
    ) -> None:
        for index, (envelope, message) in enumerate(items):
            try:
                outcomes[index] = self.send(conn, envelope, message)
            except SMTPReplyError as exc:
                outcomes[index] = exc

    def close(self, conn: ConnectionBase) -> None:
        if conn.info is None:
            return
        conn.info = None
        # As 0.3.x did: a failed QUIT changes nothing about what was sent.
        with suppress(Exception):
            self.smtp.quit()

    @contextmanager
    def _errors(self, conn: ConnectionBase, *, connecting: bool) -> Iterator[None]:
        """Report what the mock raised as the FluxMail error a real session would raise."""
        try:
            yield
        except FluxMailException:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            refused = {addr: Reply(*_reply_args(value)) for addr, value in exc.recipients.items()}
            raise RecipientsRefused(refused) from exc
        except smtplib.SMTPResponseException as exc:
            reply = Reply(exc.smtp_code, (_text(exc.smtp_error),))
            raise SMTPReplyError(f"Server replied {reply}", reply) from exc
        except (smtplib.SMTPServerDisconnected, ssl.SSLError) as exc:
            raise conn._map_error(exc, connecting=connecting) from exc
        except smtplib.SMTPException as exc:
            raise FluxMailException(f"SMTP error: {exc}", "smtp_error") from exc
        except OSError as exc:
            raise conn._map_error(exc, connecting=connecting) from exc


def _reply_args(value: object) -> tuple[int, tuple[str, ...]]:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        return value[0], (_text(value[1]),)
    return 550, (_text(value),)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
