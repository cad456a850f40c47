"""The asyncio client: the same queue and batches, sent by a task on the caller's loop."""

from __future__ import annotations

import asyncio
import atexit
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from getfluxly import transport
from getfluxly._base import DEFAULT_SHUTDOWN_TIMEOUT, ClientBase, ErrorCallback
from getfluxly.batching import Batch
from getfluxly.errors import GFluxError
from getfluxly.events import EncodedEvent, build_identify, build_track
from getfluxly.transport import Reply

__all__ = ["AsyncClient"]


class AsyncClient:
    """:class:`~getfluxly.Client` for asyncio: the same options and rules, with ``await``.

    ``await client.track(...)``, ``await client.identify(...)``, ``await client.alias(...)``,
    ``await client.flush()``, ``await client.shutdown()`` (or ``aclose()``, or
    ``async with AsyncClient(...) as client:``). ``track()`` and ``identify()`` only validate
    and queue; a flusher task, started on the running loop by the first event, sends the
    batches. A client belongs to the event loop it first ran on.

    At interpreter exit, events left by a program that never called ``shutdown()`` (its
    loop is gone by then) are sent synchronously, within the default shutdown timeout.
    """

    def __init__(
        self,
        token: str,
        api_host: str | None = None,
        flush_at: int = 20,
        flush_interval: float = 5.0,
        max_retries: int = 2,
        timeout: float = 5.0,
        max_queue_size: int = 1000,
        *,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._core = ClientBase(
            token,
            api_host,
            flush_at,
            flush_interval,
            max_retries,
            timeout,
            max_queue_size,
            on_error,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        # Wakes the flusher: an event was queued, flush() or shutdown() was called.
        self._wake = asyncio.Event()
        # Set (and replaced) whenever a batch finishes or the flusher ends: flush() waits on it.
        self._progress = asyncio.Event()
        # Waits between retries; an attribute so tests can record the policy's delays.
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        # A strong reference, unlike Client's: nothing else keeps an idle client (and its
        # pending task) alive, and its events must still go out at exit. shutdown() unregisters.
        self._atexit_hook = self._at_exit
        atexit.register(self._atexit_hook)

    # -- public API ----------------------------------------------------------------------------

    @property
    def api_host(self) -> str:
        return self._core.api_host

    async def track(
        self,
        event: str,
        *,
        anonymous_id: str | None = None,
        external_id: str | None = None,
        user_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a ``track`` event; its ``message_id``. See :meth:`getfluxly.Client.track`."""
        return self._enqueue(
            build_track(
                event,
                anonymous_id=anonymous_id,
                external_id=external_id,
                user_id=user_id,
                properties=properties,
                timestamp=timestamp,
                context=context,
            )
        )

    async def identify(
        self,
        *,
        anonymous_id: str | None = None,
        external_id: str | None = None,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue an ``identify`` event; its ``message_id``. See :meth:`Client.identify`."""
        return self._enqueue(
            build_identify(
                anonymous_id=anonymous_id, external_id=external_id, user_id=user_id, traits=traits
            )
        )

    async def alias(
        self,
        user_id: str,
        *,
        anonymous_id: str | None = None,
        previous_id: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/identify/alias`` now; see :meth:`getfluxly.Client.alias`."""
        if self._core._closing:
            raise GFluxError("the client was shut down", code="client_closed")
        request = self._core._alias_request(user_id, anonymous_id, previous_id, request_id)
        reply = await transport.send_async(
            self._http_client(), request, self._core._policy, self._sleep
        )
        return self._core._alias_answer(reply)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now and wait until each event was sent or failed for good.

        True when they all were; False if ``timeout`` seconds passed first.
        """
        core = self._core
        target = core._queue.last_seq
        if core._done_seq >= target:
            return True
        core._flush_target = max(core._flush_target, target)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while core._done_seq < target:
                    if self._task is None or self._task.done():
                        return False
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def shutdown(self, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Send what is queued within ``timeout`` seconds, then stop; safe to call again.

        True when every queued event was sent or failed for good in time; otherwise the rest
        (a batch in flight included: it may or may not have arrived) is reported to
        ``on_error`` with code ``shutdown_timeout``.
        """
        core = self._core
        if core._shutdown_result is not None or core._closing:
            return bool(core._shutdown_result)
        core._closing = True
        self._wake.set()
        atexit.unregister(self._atexit_hook)
        delivered = await self.flush(timeout)
        task = self._task
        if task is not None:
            if not delivered:
                in_flight = core._in_flight
                leftovers = core._give_up()
                task.cancel()
                await asyncio.wait({task})
                if in_flight is not None:
                    leftovers = list(in_flight.events) + leftovers
                core._report_unsent(
                    leftovers, "shutdown() ran out of time before these were confirmed sent"
                )
            else:
                await asyncio.wait({task})
        if self._http is not None:
            await self._http.aclose()
        core._shutdown_result = delivered
        return delivered

    async def aclose(self) -> None:
        """Same as :meth:`shutdown` with its default timeout."""
        await self.shutdown()

    # ``close()`` mirrors Client.close(), awaited.
    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._core.describe()}>"

    # -- the flusher -----------------------------------------------------------------------------

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            core = self._core
            self._http = httpx.AsyncClient(
                base_url=core.api_host, headers=core._headers, timeout=core.timeout
            )
        return self._http

    def _enqueue(self, event: EncodedEvent) -> str:
        core = self._core
        if core._closing:
            raise GFluxError("the client was shut down", code="client_closed")
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("this AsyncClient is bound to another event loop; use one per loop")
        core._queue.put(event, time.monotonic())
        if self._task is None:
            self._loop = loop
            self._task = loop.create_task(self._run(), name="getfluxly-flusher")
        if len(core._queue) >= core.flush_at or len(core._queue) == 1:
            self._wake.set()
        return event.message_id

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _run(self) -> None:
        core = self._core
        try:
            while True:
                while not core._due(time.monotonic()):
                    if core._abandoned or (core._closing and not core._queue):
                        return
                    # Cleared before sleeping, with no await in between: a wake-up set by
                    # track() after the check above is not lost.
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(core._idle_time(time.monotonic())):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                if core._abandoned:
                    return
                batch = core._queue.take_batch()
                if batch is None:
                    continue
                core._in_flight = batch
                try:
                    await self._deliver(batch)
                except Exception:  # a bug here must not kill the flusher and lose the queue
                    transport.log.exception("getfluxly flusher failed on a batch")
                    core._report(
                        batch.lost(GFluxError("internal error sending batch", code="sdk_error"))
                    )
                core._in_flight = None
                core._done_seq = max(core._done_seq, batch.last_seq)
                self._progressed()
        finally:
            self._progressed()

    async def _deliver(self, batch: Batch) -> None:
        core = self._core
        pending = [batch]
        while pending:
            current = pending.pop(0)
            outcome: Reply | GFluxError
            try:
                outcome = await transport.send_async(
                    self._http_client(), core._batch_request(current), core._policy, self._sleep
                )
            except GFluxError as exc:
                outcome = exc
            pending[:0] = core._settle(current, outcome)

    def _at_exit(self) -> None:
        self._deliver_at_exit(DEFAULT_SHUTDOWN_TIMEOUT)

    def _deliver_at_exit(self, timeout: float) -> None:
        """Send what a program that never shut down left, synchronously (the loop is gone)."""
        core = self._core
        if core._closing:
            return
        core._closing = True
        # The batch that was in flight when the loop stopped goes again as it was (same key,
        # same body): if it had arrived, the server answers with its replay.
        batches = [] if core._in_flight is None else [core._in_flight]
        while (batch := core._queue.take_batch()) is not None:
            batches.append(batch)
        if not batches:
            return
        transport.log.warning(
            "getfluxly: AsyncClient was not shut down; sending %d event(s) at exit",
            sum(len(b) for b in batches),
        )
        deadline = time.monotonic() + timeout

        def sleep(seconds: float) -> bool:
            if time.monotonic() + seconds >= deadline:
                return True
            time.sleep(seconds)
            return False

        with httpx.Client(
            base_url=core.api_host, headers=core._headers, timeout=core.timeout
        ) as http:
            for index, batch in enumerate(batches):
                if time.monotonic() >= deadline:
                    core._report_unsent(
                        [q for b in batches[index:] for q in b.events],
                        "the exit hook ran out of time before these were sent",
                    )
                    break
                core._deliver_sync(http, batch, sleep)
