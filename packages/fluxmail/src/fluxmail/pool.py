"""Connection pools for bulk sending: many connections, one rate limit, per-message results.

:class:`SMTPPool` (threads) and :class:`AsyncSMTPPool` (asyncio) share everything but their
waiting: the bookkeeping of which messages remain, their attempts and outcomes is
:class:`_Work`, and the connection policy is :class:`PoolOptions`. Each worker owns one
connection at a time and streams batches of messages down it with
:func:`~fluxmail.protocol.transaction.send_pipelined`, one round trip per message. What a
worker does next is decided once, by ``_PoolBase._plan`` (a generator of operations, as the
protocol core is); the two pools only run those operations, blocking or awaited.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

from fluxmail import outbox
from fluxmail.errors import FluxMailException, is_transient
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.transaction import Outcome
from fluxmail.ratelimit import RateLimit, RateLimiter
from fluxmail.result import SendResult
from fluxmail.retry import RetryPolicy
from fluxmail.transport import AsyncConnection, ConnectionSettings, SyncConnection

Item = tuple[Envelope, bytes]
#: Called once per message as soon as its outcome is final: (index in the batch, outcome).
OnResult = Callable[[int, Outcome], object]
C = TypeVar("C", SyncConnection, AsyncConnection)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How a pool treats its connections.

    ``max_connections`` caps the connections open at once; ``max_messages_per_connection``
    (0: no cap) replaces a connection after that many messages; a connection idle for more than
    ``idle_timeout`` seconds is closed instead of reused; ``batch_size`` is how many messages a
    worker pipelines in one go; ``rate_limit`` holds across all connections of the pool.
    """

    max_connections: int = 10
    max_messages_per_connection: int = 0
    idle_timeout: float = 60.0
    batch_size: int = 100
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.batch_size < 1 or self.max_messages_per_connection < 0:
            raise FluxMailException(
                "max_connections and batch_size must be at least 1, "
                "max_messages_per_connection at least 0",
                "invalid_config",
            )

    def batch_limit(self, sent_on_connection: int) -> int:
        """How many messages the next batch on a connection may hold."""
        limit = self.batch_size
        if self.rate_limit is not None and self.rate_limit.per_second:
            limit = min(limit, self.rate_limit.burst)  # a batch goes out all at once
        if self.max_messages_per_connection:
            limit = min(limit, self.max_messages_per_connection - sent_on_connection)
        return max(limit, 1)

    def reusable(self, conn: SyncConnection | AsyncConnection, idle_since: float) -> bool:
        if not conn.is_open or time.monotonic() - idle_since > self.idle_timeout:
            return False
        cap = self.max_messages_per_connection
        return not cap or conn.messages_sent < cap


class _Work:
    """One ``send_many`` call's bookkeeping: what remains, attempts, and final outcomes.

    Thread-safe; workers of either pool take batches, send them, and report back through
    :meth:`settle`, which decides per message between done and another attempt.
    """

    def __init__(
        self,
        count: int,
        retry: RetryPolicy,
        on_result: OnResult | None = None,
        workers: int = 1,
    ) -> None:
        self.retry = retry
        self.on_result = on_result
        self.workers = workers
        self._lock = threading.Lock()
        self._queue: deque[int] = deque(range(count))
        self._attempts = [0] * count
        self.outcomes: list[Outcome | None] = [None] * count
        self._left = count

    @property
    def done(self) -> bool:
        return self._left == 0

    def take(self, limit: int) -> list[int]:
        """The next batch: at most ``limit`` messages, and no more than an even share of
        what is left among the workers, so that at the end of a send every connection still
        has messages in flight (3,000 messages in batches of 100 over 20 connections would
        otherwise leave the last thousand to 10 of them)."""
        with self._lock:
            share = -(-len(self._queue) // self.workers)
            batch = [self._queue.popleft() for _ in range(min(limit, share))]
            for index in batch:
                self._attempts[index] += 1
            return batch

    def settle_one(self, index: int, outcome: Outcome) -> bool:
        """Record one message's outcome as soon as it is known; True if it will be tried
        again (a transient failure with attempts left), else it is final and reported."""
        with self._lock:
            if isinstance(outcome, FluxMailException) and self.retry.should_retry(
                self._attempts[index], outcome
            ):
                self._queue.appendleft(index)
                return True
            self.outcomes[index] = outcome
            self._left -= 1
        if self.on_result is not None:
            self.on_result(index, outcome)
        return False

    def batch(self, indexes: list[int]) -> _Settling:
        """The outcome map to hand a connection for one batch (see :class:`_Settling`)."""
        return _Settling(self, indexes)

    def fail_all(self, error: FluxMailException) -> None:
        """Settle everything not yet sent with ``error`` (the relay refused us for good)."""
        with self._lock:
            settled = list(self._queue)
            self._queue.clear()
            for index in settled:
                self.outcomes[index] = error
            self._left -= len(settled)
        if self.on_result is not None:
            for index in settled:
                self.on_result(index, error)

    def results(self) -> list[Outcome]:
        assert all(o is not None for o in self.outcomes), "send_many ended with messages unsent"
        return list(self.outcomes)  # type: ignore[arg-type]


class _Settling(dict[int, Outcome]):
    """One batch's outcomes, keyed by position in the batch, settled with the work the moment
    the connection stores each one, so results are reported (and logged by callers) per
    message, not when the whole batch is over."""

    def __init__(self, work: _Work, indexes: list[int]) -> None:
        super().__init__()
        self.work, self.indexes = work, indexes
        self.retrying = False

    def __setitem__(self, position: int, outcome: Outcome) -> None:
        dict.__setitem__(self, position, outcome)
        work = self.work
        if type(outcome) is not SendResult:  # a failure (retried or not): see settle_one
            self.retrying |= work.settle_one(self.indexes[position], outcome)
            return
        # A result: what settle_one does with one, without its frame (once per message).
        index = self.indexes[position]
        with work._lock:
            work.outcomes[index] = outcome
            work._left -= 1
        if work.on_result is not None:
            work.on_result(index, outcome)

    def finish(self, error: FluxMailException | None) -> bool:
        """Settle what the batch did not reach with ``error``; True if anything is retried."""
        for position in range(len(self.indexes)):
            if position not in self:
                assert error is not None, "a batch left a message unsettled without an error"
                self[position] = error
        return self.retrying


def _captured(items: Sequence[Item], on_result: OnResult | None) -> list[Outcome] | None:
    """With :func:`fluxmail.testing.capture` active, record instead of sending."""
    box = outbox.active()
    if box is None:
        return None
    results: list[Outcome] = []
    for index, (envelope, data) in enumerate(items):
        box.record(envelope, data)
        results.append(SendResult(accepted=envelope.recipients))
        if on_result is not None:
            on_result(index, results[-1])
    return results


def _single(outcome: Outcome) -> SendResult:
    if isinstance(outcome, FluxMailException):
        raise FluxMailException(f"Failed to send email via SMTP: {outcome}", "send_failed") from (
            outcome
        )
    return outcome


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Open:
    """Open a fresh connection; the shell sends it back (or throws why it failed)."""


@dataclass(frozen=True, slots=True)
class _Close(Generic[C]):
    conn: C


@dataclass(frozen=True, slots=True)
class _Send(Generic[C]):
    """``conn.send_many(items, outcomes)``; a failure of the session is thrown back."""

    conn: C
    items: list[Item]
    outcomes: _Settling


_Op = _Sleep | _Open | _Close[C] | _Send[C]


@dataclass(slots=True)
class _Held(Generic[C]):
    """The connection a worker holds between operations (the shell parks or closes it)."""

    conn: C | None = None


class _PoolBase(Generic[C]):
    """What both pools decide, with no I/O here: connection bookkeeping, and each worker's
    loop as :meth:`_plan`, a generator of operations that the sync and the async pool run
    (``time.sleep`` or ``asyncio.sleep``, blocking or awaited connections)."""

    def __init__(
        self,
        settings: Callable[[], ConnectionSettings],
        retry: RetryPolicy,
        options: PoolOptions,
    ) -> None:
        self._settings = settings
        self.retry = retry
        self.options = options
        self.limiter = RateLimiter(options.rate_limit) if options.rate_limit else None
        self._idle: list[tuple[C, float]] = []
        self._idle_lock = threading.Lock()
        self._closed = False

    def _take_idle(self) -> tuple[C | None, list[C]]:
        """A reusable idle connection, if any, and the stale ones to close."""
        stale: list[C] = []
        with self._idle_lock:
            while self._idle:
                conn, since = self._idle.pop()
                if self.options.reusable(conn, since):
                    return conn, stale
                stale.append(conn)
        return None, stale

    def _keep(self, conn: C) -> bool:
        """Park ``conn`` for reuse; False if the pool is closed or it cannot be reused."""
        if not self.options.reusable(conn, time.monotonic()):
            return False
        # ``_closed`` is read under the lock that close() sets it under: otherwise a thread
        # finishing a send could park its connection just after close() drained the idle
        # list, and that connection would never be closed.
        with self._idle_lock:
            if self._closed:
                return False
            self._idle.append((conn, time.monotonic()))
        return True

    def adopt(self, conn: C) -> None:
        """Lend the pool an open connection (a mailer's ``with`` session) to use first."""
        self._keep(conn)

    def release(self) -> list[C]:
        """Close the pool and hand back its idle connections, still open, to the caller."""
        return self._drain()

    def _drain(self) -> list[C]:
        with self._idle_lock:
            self._closed = True
            conns = [conn for conn, _ in self._idle]
            self._idle.clear()
        return conns

    def _workers(self, count: int) -> int:
        """How many connections ``count`` messages are spread over: no more than hold a
        batch each (a worker takes a whole batch at a time, so another would find nothing
        left and the sync shell would have started a thread for nothing)."""
        batches = -(-count // self.options.batch_limit(0))
        return max(1, min(self.options.max_connections, batches))

    def _plan(
        self, items: Sequence[Item], work: _Work, held: _Held[C]
    ) -> Generator[_Op[C], C | None, None]:
        """One worker's decisions: take a batch, wait for the rate limit, reuse or replace
        the connection, send, retry after ``retry.delay``, until the work is done. The
        connection held at the end is left in ``held`` for the shell to park or close."""
        while not work.done:
            conn = held.conn
            batch = work.take(self.options.batch_limit(conn.messages_sent if conn else 0))
            if not batch:
                return  # the rest is in other workers' hands
            if self.limiter is not None and (wait := self.limiter.reserve(len(batch))):
                yield _Sleep(wait)
            outcomes = work.batch(batch)
            if conn is not None and not self.options.reusable(conn, time.monotonic()):
                held.conn = None
                yield _Close(conn)
            try:
                if held.conn is None:
                    idle, stale = self._take_idle()
                    for old in stale:
                        yield _Close(old)
                    held.conn = idle if idle is not None else (yield _Open())
                assert held.conn is not None
                yield _Send(held.conn, [items[i] for i in batch], outcomes)
            except FluxMailException as exc:
                if held.conn is None and not is_transient(exc):
                    # Could not even open a session (bad password, TLS refused): the same
                    # awaits every other message, so settle them all now.
                    outcomes.finish(exc)
                    work.fail_all(exc)
                    return
                held.conn = None  # the transport dropped the session
                retrying = outcomes.finish(exc)
            else:
                retrying = outcomes.finish(None)
            if retrying:
                yield _Sleep(self.retry.delay)


class SMTPPool(_PoolBase[SyncConnection]):
    """A thread-safe pool of blocking SMTP connections. Use as a context manager.

    :meth:`send_many` sends a batch over up to ``max_connections`` connections in parallel
    threads and returns one outcome per message, in order: a :class:`SendResult`, or the
    :class:`FluxMailException` that settled it after the mailer's retries.
    """

    def __init__(
        self,
        settings: Callable[[], ConnectionSettings],
        retry: RetryPolicy,
        options: PoolOptions,
    ) -> None:
        super().__init__(settings, retry, options)
        self._slots = threading.BoundedSemaphore(options.max_connections)

    def send(self, envelope: Envelope, data: bytes) -> SendResult:
        """Send one message; raises ``send_failed`` (chained) if it could not be sent."""
        return _single(self.send_many([(envelope, data)])[0])

    def send_many(self, items: Iterable[Item], on_result: OnResult | None = None) -> list[Outcome]:
        """Send every item; one outcome per item, in order. ``on_result`` hears of each
        outcome as soon as it is final (from the worker threads: keep it quick and safe)."""
        batch = list(items)
        if (captured := _captured(batch, on_result)) is not None:
            return captured
        workers = self._workers(len(batch))
        work = _Work(len(batch), self.retry, on_result, workers)
        if workers == 1:
            self._worker(batch, work)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="fluxmail-pool") as threads:
                for future in [threads.submit(self._worker, batch, work) for _ in range(workers)]:
                    future.result()
        return work.results()

    def _worker(self, items: Sequence[Item], work: _Work) -> None:
        """Run one worker's plan with blocking I/O."""
        held: _Held[SyncConnection] = _Held()
        with self._slots:
            plan = self._plan(items, work, held)
            try:
                op = next(plan)
                while True:
                    try:
                        result = self._do(op)
                    except FluxMailException as exc:
                        op = plan.throw(exc)
                    else:
                        op = plan.send(result)
            except StopIteration:
                pass
            finally:
                if held.conn is not None and not self._keep(held.conn):
                    held.conn.close()

    def _do(self, op: _Op[SyncConnection]) -> SyncConnection | None:
        if isinstance(op, _Send):
            op.conn.send_many(op.items, op.outcomes)
        elif isinstance(op, _Sleep):
            time.sleep(op.seconds)
        elif isinstance(op, _Close):
            op.conn.close()
        else:
            conn = SyncConnection(self._settings())
            conn.open()
            return conn
        return None

    def close(self) -> None:
        """QUIT every idle connection; connections in use close when their worker ends."""
        for conn in self._drain():
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSMTPPool(_PoolBase[AsyncConnection]):
    """The asyncio twin of :class:`SMTPPool`: ``max_connections`` concurrent tasks."""

    def __init__(
        self,
        settings: Callable[[], ConnectionSettings],
        retry: RetryPolicy,
        options: PoolOptions,
    ) -> None:
        super().__init__(settings, retry, options)
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside the loop

    async def send(self, envelope: Envelope, data: bytes) -> SendResult:
        """Send one message; raises ``send_failed`` (chained) if it could not be sent."""
        return _single((await self.send_many([(envelope, data)]))[0])

    async def send_many(
        self, items: Iterable[Item], on_result: OnResult | None = None
    ) -> list[Outcome]:
        """Send every item; one outcome per item, in order; ``on_result`` as for the sync pool."""
        batch = list(items)
        if (captured := _captured(batch, on_result)) is not None:
            return captured
        workers = self._workers(len(batch))
        work = _Work(len(batch), self.retry, on_result, workers)
        # Every worker ends before this returns or raises, as the sync pool's threads do: one
        # whose ``on_result`` raised must not leave the others sending on, unawaited.
        ended = await asyncio.gather(
            *(self._worker(batch, work) for _ in range(workers)), return_exceptions=True
        )
        for error in ended:
            if error is not None:
                raise error
        return work.results()

    async def _worker(self, items: Sequence[Item], work: _Work) -> None:
        """Run one worker's plan with asyncio I/O."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.options.max_connections)
        held: _Held[AsyncConnection] = _Held()
        async with self._slots:
            plan = self._plan(items, work, held)
            try:
                op = next(plan)
                while True:
                    try:
                        result = await self._do(op)
                    except FluxMailException as exc:
                        op = plan.throw(exc)
                    else:
                        op = plan.send(result)
            except StopIteration:
                pass
            finally:
                if held.conn is not None and not self._keep(held.conn):
                    await held.conn.close()

    async def _do(self, op: _Op[AsyncConnection]) -> AsyncConnection | None:
        if isinstance(op, _Send):
            await op.conn.send_many(op.items, op.outcomes)
        elif isinstance(op, _Sleep):
            await asyncio.sleep(op.seconds)
        elif isinstance(op, _Close):
            await op.conn.close()
        else:
            conn = AsyncConnection(self._settings())
            await conn.open()
            return conn
        return None

    async def close(self) -> None:
        """QUIT every idle connection; connections in use close when their task ends."""
        for conn in self._drain():
            await conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
