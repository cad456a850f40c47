"""The asyncio shell: the same conversations as :mod:`.sync`, awaited instead of blocked on."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fluxmail.errors import FluxMailException, SMTPConnectError, SMTPReplyError
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.ops import Conversation, Exchange, Op
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


@dataclass(slots=True)
class _Returned:
    """What a conversation returned, as the result of :meth:`_ReplyStream.drive`."""

    value: Any


#: What one read may take: far more than a pipelined batch's replies.
READ_BUFFER = 1 << 16


class _ReplyStream(asyncio.BufferedProtocol):
    """Collects server bytes into a :class:`ReplyParser` and runs the conversation's exchanges
    from inside the protocol's callbacks.

    A buffered protocol: the loop reads into one buffer kept for the connection's life. (A
    plain protocol's loop allocates 256 KiB per read, which CPython's allocator maps,
    shrinks and unmaps again: three system calls per read, a third of the pool's system
    time.)

    Written on the Protocol API rather than StreamReader so that the only buffer is ours: at
    STARTTLS we can prove nothing was read ahead in the clear. And so that a conversation's
    exchanges need no task: :meth:`drive` writes an exchange's bytes, and
    :meth:`data_received`, once the replies it waits for are in, sends them into the
    conversation and writes the next exchange at once. A steady pipelined stream thus costs
    one callback per message, without a future, a task wake-up or a chain of coroutine frames
    to resume (~a fifth of the async pool's CPU). The awaiting coroutine
    (:meth:`AsyncConnection._run`) hears only how the conversation ended, or that it asks for
    a TLS upgrade.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.parser = ReplyParser()
        self._view = memoryview(bytearray(READ_BUFFER))
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._error: BaseException | None = None
        # The conversation being driven, its future (see drive), the connection whose logger
        # hears the conversation, and the exchange under way: replies wanted and got so far.
        self._conversation: Conversation[Any] | None = None
        self._step: asyncio.Future[Op | _Returned] | None = None
        self._owner: ConnectionBase | None = None
        self._debug = False
        self._wanted = 0
        self._got: list[Reply] = []
        # The timeout: each exchange may take ``timeout`` seconds, counted from when it was
        # written (``_since``); one timer per conversation checks it, re-armed when it finds
        # that exchanges went on meanwhile (no timer per exchange).
        self._timeout: float | None = None
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # The loop's clock: asyncio's own loop.time() is a Python method that returns
        # time.monotonic(), so call that directly (read once per exchange); uvloop's is its own.
        asyncio_time = type(self._loop).time is asyncio.BaseEventLoop.time
        self._clock: Callable[[], float] = time.monotonic if asyncio_time else self._loop.time
        #: Resolved once the transport has really let go of its socket.
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        # data_received's work, without its frame: in a pipelined stream this runs once per
        # message (the two must stay the same).
        try:
            self.parser.feed(self._view[:nbytes].tobytes())
        except FluxMailException as exc:
            self._error = exc
            self._end(exc)
            return
        if self._conversation is not None:
            self._pump()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport; not checked with isinstance: other event loops'
        # transports (uvloop's) have the methods without subclassing asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Bytes from the server (what :meth:`buffer_updated` does with what it read)."""
        try:
            self.parser.feed(data)
        except FluxMailException as exc:
            self._error = exc
            self._end(exc)
            return
        if self._conversation is not None:
            self._pump()

    def stop(self) -> None:
        """Drive nothing more (the connection is being dropped)."""
        self._end(connection_closed(self.address))

    def connection_lost(self, exc: Exception | None) -> None:
        self._error = exc or connection_closed(self.address)
        self._end(self._error)
        if not self.closed.done():
            self.closed.set_result(None)

    def drive(
        self,
        conversation: Conversation[Any],
        op: Exchange,
        owner: ConnectionBase,
        timeout: float | None,
    ) -> asyncio.Future[Op | _Returned]:
        """Run ``conversation`` from ``op`` on, an exchange after another, from the protocol's
        callbacks. The future resolves to :class:`_Returned` when the conversation returns,
        to the op when it asks for one that is not an exchange (:class:`UpgradeTLS`), or to
        the error that stopped it: its own, or the transport's (which the caller throws into
        it, see :func:`report_failure`)."""
        step: asyncio.Future[Op | _Returned] = self._loop.create_future()
        self._conversation, self._step, self._owner = conversation, step, owner
        self._debug = owner._debug()  # asked once per conversation, not per exchange
        self._timeout = timeout
        if self._error is not None:
            self._end(self._error)
            return step
        if timeout is not None:
            self._timer = self._loop.call_at(self._loop.time() + timeout, self._check_timeout)
        self._start(op)
        if self._conversation is not None and (self.parser.pending or not self._wanted):
            self._pump()  # the replies were read ahead (a server answering early), or none due
        return step

    def _start(self, op: Exchange) -> None:
        """Write one exchange and wait for its replies (repeated in :meth:`_pump`)."""
        assert self.transport is not None
        if self._debug:
            assert self._owner is not None
            self._owner._log_out(op)
        if self._timeout is not None:
            self._since = self._clock()
        self._wanted, self._got = op.replies, []
        if op.data:
            self.transport.write(op.data)

    def _pump(self) -> None:
        """Hand the conversation its replies once they are all in, and go on with what it
        asks next, for as long as the replies are already here."""
        conversation = self._conversation
        assert conversation is not None
        parser = self.parser
        while True:
            got, wanted = self._got, self._wanted
            if len(got) < wanted:
                if got:
                    got += parser.take(wanted - len(got))
                else:  # the common case: all the replies come in one read
                    got = self._got = parser.take(wanted)
                if len(got) < wanted:
                    return  # more bytes to come
            if self._debug:
                assert self._owner is not None
                for reply in got:
                    self._owner._log_in(reply)
            try:
                op = conversation.send(got)
            except StopIteration as done:
                self._resolve(_Returned(done.value))
                return
            except BaseException as exc:  # the conversation's own error (or a callback's)
                self._end(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            if type(op) is not Exchange:
                self._resolve(op)
                return
            # What _start does, without its frame (once per message in a pipelined stream).
            if self._debug:
                assert self._owner is not None
                self._owner._log_out(op)
            if self._timeout is not None:
                self._since = self._clock()
            self._wanted, self._got = op.replies, []
            if op.data:
                assert self.transport is not None
                self.transport.write(op.data)
            if self._conversation is None:  # the write failed: the connection is lost
                return
            if self._wanted and not parser.pending:
                return

    def _resolve(self, result: Op | _Returned) -> None:
        step = self._release()
        if step is not None and not step.done():
            step.set_result(result)

    def _end(self, error: BaseException) -> None:
        """Stop driving: ``error`` goes to whoever awaits the conversation."""
        step = self._release()
        if step is not None and not step.done():
            step.set_exception(error)

    def _release(self) -> asyncio.Future[Op | _Returned] | None:
        step, self._step, self._conversation, self._owner = self._step, None, None, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return step

    def _check_timeout(self) -> None:
        self._timer = None
        if self._step is None or self._timeout is None:
            return
        due = self._since + self._timeout
        if self._loop.time() >= due:
            self._end(TimeoutError())
        else:  # exchanges went on since the timer was set: wait for the current one
            self._timer = self._loop.call_at(due, self._check_timeout)


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
        if stream is not None:
            stream.stop()
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
        """Drive a conversation to its end; any failure but an SMTP reply kills the session.

        The exchanges run inside the protocol's callbacks (:meth:`_ReplyStream.drive`); this
        coroutine runs what they cannot (the TLS handshake) and handles how it ended.
        """
        stream = self._stream
        assert stream is not None, "conversation ran on a closed connection"
        timeout = self.settings.timeout  # None: wait as long as it takes (0.3.3's timeout=None)
        try:
            op = next(conversation)
            while True:
                if type(op) is Exchange:
                    step = await stream.drive(conversation, op, self, timeout)
                    if isinstance(step, _Returned):
                        return step.value  # type: ignore[no-any-return]
                    op = step
                else:
                    async with asyncio.timeout(timeout):
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
        stream.transport = cast(asyncio.Transport, transport)  # see connection_made
        return []
