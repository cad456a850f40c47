"""``mailer._transport``: the one path a :class:`~fluxmail.FluxMail` mailer's SMTP attempts take.

Every SMTP attempt of ``send()``, ``send_async()`` and ``send_message()`` is one call of
:meth:`MailerTransport.send` (or :meth:`~MailerTransport.send_async`), and every connection
the mailer opens for itself (inside ``with``, ``connect()``, ``test_connection()``) comes from
:meth:`~MailerTransport._make_connection`. The mailer decides around it what the contract
says: the retries, the result, the errors. Pools (and so ``BulkSender``) open their own
connections; a :func:`fluxmail.testing.capture` answers before the transport is reached.

FluxMail 0.3.x's mailer sent through a private ``_transport`` object with these method names,
and tests written for it replace them (``mock.patch.object(mailer._transport, "send", ...)``);
that intercepts every send, as it did. A replacement may raise what 0.3.x's raised, smtplib's
errors and ``OSError``: the mailer reports them as the FluxMail error a real session would
have raised (see :func:`fluxmail.transport.base.stdlib_error`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fluxmail.protocol.commands import Envelope
from fluxmail.result import SendResult
from fluxmail.transport import AsyncConnection, SyncConnection

if TYPE_CHECKING:
    from fluxmail.client import FluxMail

#: One message as it is sent: its envelope and its final wire bytes.
Outgoing = tuple[Envelope, bytes]


class MailerTransport:
    """One mailer's connections and single attempts (no retries: the mailer decides those).

    Inside the mailer's ``with`` (``async with``) an attempt uses the connection held there,
    opening it first when there is none or it broke; outside, each attempt opens a connection
    of its own and closes it after.
    """

    def __init__(self, mailer: FluxMail) -> None:
        self._mailer = mailer

    def _make_connection(self) -> SyncConnection:
        """A connection opened as the mailer is configured: connected, TLS, logged in."""
        conn = SyncConnection(self._mailer._settings())
        conn.open()  # closes itself when it fails
        return conn

    async def _make_async_connection(self) -> AsyncConnection:
        """:meth:`_make_connection` on asyncio."""
        conn = AsyncConnection(self._mailer._settings())
        try:
            await conn.open()
        except BaseException:
            await conn.close()
            raise
        return conn

    def send(self, message: Outgoing) -> SendResult:
        """Make one attempt to send ``message``; raise the attempt's FluxMail error."""
        envelope, data = message
        mailer = self._mailer
        if not mailer._in_context:
            conn = self._make_connection()
            try:
                return conn.send(envelope, data)
            finally:
                conn.close()
        if mailer._conn is None or not mailer._conn.is_open:
            mailer._conn = self._make_connection()
        return mailer._conn.send(envelope, data)

    async def send_async(self, message: Outgoing) -> SendResult:
        """:meth:`send` on asyncio, with the connection held by ``async with``."""
        envelope, data = message
        mailer = self._mailer
        if not mailer._in_context:
            conn = await self._make_async_connection()
            try:
                return await conn.send(envelope, data)
            finally:
                await conn.close()
        if mailer._aconn is None or not mailer._aconn.is_open:
            mailer._aconn = await self._make_async_connection()
        return await mailer._aconn.send(envelope, data)
