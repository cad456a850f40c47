"""The blocking shell: one SMTP session over a socket."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import TypeVar

from fluxmail.errors import FluxMailException, SMTPConnectError, SMTPReplyError
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.ops import Conversation, Exchange
from fluxmail.protocol.replies import Reply, ReplyParser
from fluxmail.protocol.session import ServerInfo, open_session, simple
from fluxmail.protocol.transaction import Outcome, send_message, send_pipelined
from fluxmail.result import SendResult
from fluxmail.transport.base import (
    ConnectionBase,
    connect_tcp,
    connection_closed,
    data_before_tls,
    kernel_timeouts,
    python_timeout,
    report_failure,
)

T = TypeVar("T")


class SyncConnection(ConnectionBase):
    """A blocking SMTP connection. Not thread-safe: one thread uses it at a time."""

    _sock: socket.socket | None = None
    #: Whether ``_sock`` is blocking with the kernel's timeouts (see ``kernel_timeouts``).
    _kernel_timeouts = False

    @property
    def is_open(self) -> bool:
        """True once the session is open and until it is closed or breaks."""
        return self._sock is not None and self.info is not None

    def open(self) -> ServerInfo:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as the settings say."""
        settings = self.settings
        self._parser = ReplyParser()
        try:
            sock = connect_tcp(settings)
            # We write whole command groups at once; Nagle would only hold the last segment
            # back until the server's (delayed) ACK, costing up to 40 ms per round trip.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if settings.plan.tls_mode == "ssl":
                    sock = settings.tls_context().wrap_socket(sock, server_hostname=settings.host)
                else:  # plain until a STARTTLS, if any: no poll before each call
                    self._kernel_timeouts = kernel_timeouts(sock, settings.timeout)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise self._map_error(exc, connecting=True) from exc
        self._sock = sock
        try:
            self.info = self._run(open_session(settings.plan))
        except BaseException:
            self._abort()  # a session that failed to open is of no use to anyone
            raise
        return self.info

    def send(self, envelope: Envelope, message: bytes) -> SendResult:
        """Send one message on the open session; partial refusals come back in the result."""
        if self.info is None:
            raise SMTPConnectError("The connection is not open", "connection_lost")
        try:
            result = self._run(send_message(envelope, message, self.info.extensions))
        except SMTPReplyError:
            self._reset_quietly()
            raise
        self.messages_sent += 1
        return result

    def send_many(
        self, items: Sequence[tuple[Envelope, bytes]], outcomes: dict[int, Outcome]
    ) -> None:
        """Send every item on this session, pipelined; see :func:`send_pipelined`.

        Outcomes land in ``outcomes`` as they are known; if the connection breaks, the
        exception propagates and the items without an outcome were not sent.
        """
        if self.info is None:
            raise SMTPConnectError("The connection is not open", "connection_lost")
        before = len(outcomes)
        try:
            self._run(send_pipelined(items, self.info.extensions, outcomes))
        finally:
            self.messages_sent += len(outcomes) - before

    def noop(self) -> Reply:
        return self._run(simple("NOOP"))

    def close(self) -> None:
        """QUIT politely if the session is healthy, then close the socket. Never raises."""
        if self._sock is None:
            return
        if self.info is not None:
            with contextlib.suppress(FluxMailException):
                self._run(simple("QUIT"))
        self._abort()

    def _reset_quietly(self) -> None:
        with contextlib.suppress(FluxMailException):
            self._run(simple("RSET"))

    def _abort(self) -> None:
        sock, self._sock, self.info = self._sock, None, None
        if sock is not None:
            sock.close()

    def _run(self, conversation: Conversation[T]) -> T:
        """Drive a conversation to its end; any failure but an SMTP reply kills the session."""
        try:
            op = next(conversation)
            while True:
                replies = self._exchange(op) if isinstance(op, Exchange) else self._upgrade()
                op = conversation.send(replies)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except SMTPReplyError:
            raise
        except (OSError, FluxMailException) as exc:
            self._abort()
            error = self._map_error(exc, connecting=False)
            final = report_failure(conversation, error)
            if final is not error:
                raise final  # noqa: B904 - the conversation's own, chained to ``error``
            raise error from exc
        except BaseException:
            # Anything else (a caller's callback raising, a cancellation) leaves the session
            # in an unknown state: drop it rather than reuse it.
            self._abort()
            raise

    def _exchange(self, op: Exchange) -> list[Reply]:
        sock, parser = self._sock, self._parser
        assert sock is not None, "conversation ran on a closed connection"
        debug = self._debug()
        if debug:
            self._log_out(op)
        if op.data:
            sock.sendall(op.data)
        wanted = op.replies
        replies = parser.take(wanted) if parser.pending else []
        while len(replies) < wanted:
            chunk = sock.recv(65536)
            if not chunk:
                raise connection_closed(self.settings.address)
            parser.feed(chunk)
            replies += parser.take(wanted - len(replies))
        if debug:
            for reply in replies:
                self._log_in(reply)
        return replies

    def _upgrade(self) -> list[Reply]:
        assert self._sock is not None, "conversation ran on a closed connection"
        if self._parser.pending:
            raise data_before_tls(self.settings.address)
        if self._kernel_timeouts:  # OpenSSL needs Python's timeout (see kernel_timeouts)
            python_timeout(self._sock, self.settings.timeout)
            self._kernel_timeouts = False
        context = self.settings.tls_context()
        self._sock = context.wrap_socket(self._sock, server_hostname=self.settings.host)
        return []
