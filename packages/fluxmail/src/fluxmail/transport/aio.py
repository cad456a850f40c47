"""The asyncio shell: the same conversations as :mod:`.sync`, awaited instead of blocked on."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
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
    connection_closed,
    data_before_tls,
    handshake_aborted,
    report_failure,
)

T = TypeVar("T")


class _ReplyStream(asyncio.Protocol):
    """Collects server bytes into a :class:`ReplyParser` and wakes whoever waits for a reply.

    Written on the Protocol API rather than StreamReader so that the only buffer is ours: at
    STARTTLS we can prove nothing was read ahead in the clear.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.parser = ReplyParser()
        self.transport: asyncio.Transport | None = None
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        #: Resolved once the transport has really let go of its socket.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except FluxMailException as exc:
            self._error = exc
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._error = exc or connection_closed(self.address)
        self._wake()
        self._resume()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._resume()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _resume(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        assert self.transport is not None
        self.transport.write(data)
        if self._paused:  # the kernel buffer is full: wait, as StreamWriter.drain() would
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            if self._error is not None:
                raise self._error

    async def read_replies(self, count: int) -> list[Reply]:
        """The next ``count`` replies, waiting for the bytes as they come."""
        replies = self.parser.take(count) if self.parser.pending else []
        while len(replies) < count:
            if self._error is not None:
                raise self._error
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            replies += self.parser.take(count - len(replies))
        return replies


class AsyncConnection(ConnectionBase):
    """An asyncio SMTP connection. One task uses it at a time."""

    _stream: _ReplyStream | None = None

    @property
    def is_open(self) -> bool:
        """True once the session is open and until it is closed or breaks."""
        return self._stream is not None and self.info is not None

    async def open(self) -> ServerInfo:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as the settings say."""
        settings = self.settings
        implicit = settings.plan.tls_mode == "ssl"
        loop = asyncio.get_running_loop()
        stream = _ReplyStream(settings.address)
        try:
            async with asyncio.timeout(settings.timeout):
                addresses: Sequence[str] = (settings.host,)
                if settings.resolve is not None:
                    # The resolver may look names up (blocking): not on the event loop. The
                    # connection then goes to what it returned, the name kept for TLS.
                    resolved = await loop.run_in_executor(
                        None, settings.resolve, settings.host, settings.port
                    )
                    addresses = tuple(resolved)
                    if not addresses:
                        raise ConnectionRefusedError(f"{settings.host} has no address")
                for index, address in enumerate(addresses):
                    stream = _ReplyStream(settings.address)
                    try:
                        await loop.create_connection(
                            lambda stream=stream: stream,
                            address,
                            settings.port,
                            ssl=settings.tls_context() if implicit else None,
                            server_hostname=settings.host if implicit else None,
                        )
                        break
                    except ssl.SSLError:
                        raise  # the address answered: trying another will not fix TLS
                    except OSError:
                        if index == len(addresses) - 1:
                            raise
        except OSError as exc:
            hung_up = isinstance(exc, ConnectionError | EOFError)
            if implicit and hung_up and not isinstance(exc, ConnectionRefusedError):
                raise handshake_aborted(settings.address) from exc
            raise self._map_error(exc, connecting=True) from exc
        self._stream = stream
        try:
            self.info = await self._run(open_session(settings.plan))
        except BaseException:
            self._abort()  # a session that failed to open is of no use to anyone
            raise
        return self.info

    async def send(self, envelope: Envelope, message: bytes) -> SendResult:
        """Send one message on the open session; partial refusals come back in the result."""
        if self.info is None:
            raise SMTPConnectError("The connection is not open", "connection_lost")
        try:
            result = await self._run(send_message(envelope, message, self.info.extensions))
        except SMTPReplyError:
            await self._reset_quietly()
            raise
        self.messages_sent += 1
        return result

    async def send_many(
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
            await self._run(send_pipelined(items, self.info.extensions, outcomes))
        finally:
            self.messages_sent += len(outcomes) - before

    async def noop(self) -> Reply:
        return await self._run(simple("NOOP"))

    async def close(self) -> None:
        """QUIT politely if the session is healthy, then close the transport. Never raises."""
        if self._stream is None:
            return
        if self.info is not None:
            with contextlib.suppress(FluxMailException):
                await self._run(simple("QUIT"))
        await self._drop()

    async def _reset_quietly(self) -> None:
        with contextlib.suppress(FluxMailException):
            await self._run(simple("RSET"))

    def abort(self) -> None:
        """Drop the connection without QUIT (for sync code that cannot await :meth:`close`)."""
        self._abort()

    def _abort(self) -> None:
        """Start closing at once (sync callers); the socket goes on the loop's next turn."""
        stream, self._stream, self.info = self._stream, None, None
        if stream is not None and stream.transport is not None:
            stream.transport.abort() if stream._error else stream.transport.close()

    async def _drop(self) -> None:
        """Close and wait (briefly) until the socket is really closed: a transport left
        "closing" when its loop ends is never cleaned up."""
        stream = self._stream
        self._abort()
        if stream is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stream.closed), 2.0)

    async def _run(self, conversation: Conversation[T]) -> T:
        """Drive a conversation to its end; any failure but an SMTP reply kills the session."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeout  # None: wait as long as it takes (0.3.3's timeout=None)
        # One deadline for the whole conversation, moved on before each exchange only when
        # it would move by more than 5 % of the timeout: a timer per exchange cost the async
        # pool ~8 % of its CPU. So each exchange gets between 95 % and all of the timeout.
        slack = 0.0 if timeout is None else timeout * 0.05
        try:
            async with asyncio.timeout_at(
                None if timeout is None else loop.time() + timeout
            ) as deadline:
                op = next(conversation)
                while True:
                    now = loop.time()
                    if timeout is not None and now + timeout - (deadline.when() or now) > slack:
                        deadline.reschedule(now + timeout)
                    if isinstance(op, Exchange):
                        replies = await self._exchange(op)
                    else:
                        replies = await self._upgrade()
                    op = conversation.send(replies)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except SMTPReplyError:
            raise
        except (OSError, FluxMailException) as exc:
            await self._drop()
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

    async def _exchange(self, op: Exchange) -> list[Reply]:
        stream = self._stream
        assert stream is not None, "conversation ran on a closed connection"
        debug = self._debug()
        if debug:
            self._log_out(op)
        if op.data:
            await stream.write(op.data)
        replies = await stream.read_replies(op.replies)
        if debug:
            for reply in replies:
                self._log_in(reply)
        return replies

    async def _upgrade(self) -> list[Reply]:
        stream = self._stream
        assert stream is not None
        assert stream.transport is not None
        if stream.parser.pending:
            raise data_before_tls(self.settings.address)
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                stream.transport,
                stream,
                self.settings.tls_context(),
                server_hostname=self.settings.host,
            )
        except (ConnectionError, EOFError) as exc:
            raise handshake_aborted(self.settings.address) from exc
        assert isinstance(transport, asyncio.Transport)
        stream.transport = transport
        return []
