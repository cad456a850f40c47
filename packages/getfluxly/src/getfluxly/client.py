"""The synchronous client: events queue in memory and a daemon thread sends them in batches."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from getfluxly import transport
from getfluxly._base import DEFAULT_SHUTDOWN_TIMEOUT, ClientBase, ErrorCallback
from getfluxly.errors import GFluxError
from getfluxly.events import EncodedEvent, build_identify, build_track

__all__ = ["Client"]

#: The longest a waiting flush() sleeps before checking that the flusher is still alive.
_POLL = 0.5


def _shutdown_at_exit(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        client.shutdown()


class Client:
    """Sends events to a GetFluxly server from any number of threads.

    ``Client(token, api_host=None, flush_at=20, flush_interval=5.0, max_retries=2,
    timeout=5.0, max_queue_size=1000, *, on_error=None)``

    - ``token``: a project key, ``gflux_secret_...`` (``alias()`` needs this one) or
      ``gflux_pub_...``; sent as ``Authorization: Bearer <token>``.
    - ``api_host``: the server's base URL. Default: the ``GETFLUXLY_URL`` environment
      variable (what ``getfluxly dev`` prints), else ``http://127.0.0.1:8000``.
    - ``flush_at``: send as soon as this many events are queued; ``flush_interval``: send
      anything queued for this many seconds. A batch holds at most 100 events and 256 000
      bytes (the ingest limits); more queued events go out in several batches.
    - ``max_retries``: retries per request (408, 425, 429, 5xx, network errors), with
      jittered exponential backoff honouring ``Retry-After`` (see :mod:`getfluxly.transport`).
    - ``timeout``: seconds per HTTP attempt.
    - ``max_queue_size``: events that may wait; beyond it ``track()`` raises
      ``GFluxError(code="queue_overflow")``.
    - ``on_error``: called with a :class:`GFluxError` for events dropped for good (the server
      rejected them, retries ran out, ``shutdown()`` ran out of time); ``details`` holds their
      ``message_ids`` and ``events``. It runs on the flusher thread (for what ``shutdown()``
      gives up on, on the thread calling it), must not block for long, and must not call
      ``flush()`` or ``shutdown()``. Drops are also logged on the ``getfluxly`` logger;
      nothing is ever raised from the background thread.

    ``track()`` and ``identify()`` only validate and queue: they never wait for the network,
    so a server that is down never blocks them. ``shutdown()`` (or ``close()``, or leaving a
    ``with`` block) sends what is queued; it is also registered with :mod:`atexit`, so events
    queued by a script that then exits are delivered.
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
        self._cv = threading.Condition()
        # Set when shutdown() gives up: interrupts retry back-offs (see _sleep).
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Thread-safe for concurrent requests (the flusher's batches, callers' alias()).
        self._http = httpx.Client(
            base_url=self._core.api_host,
            headers=self._core._headers,
            timeout=timeout,
        )
        # Waits between retries; True means "stop retrying". An attribute so tests can record
        # the delays the retry policy chose instead of waiting them out.
        self._sleep: Callable[[float], bool] = self._stop.wait
        self._atexit_hook = _AtExit(weakref.ref(self))
        atexit.register(self._atexit_hook)

    # -- public API ----------------------------------------------------------------------------

    @property
    def api_host(self) -> str:
        return self._core.api_host

    def track(
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
        """Queue a ``track`` event; its ``message_id`` (a UUID string).

        ``timestamp``: an aware ``datetime`` or an ISO-8601 string with an offset (default:
        now). Raises ``GFluxError`` with code ``validation_error`` when the event breaks the
        ingest rules (see :mod:`getfluxly.events`), ``queue_overflow`` when the queue is full,
        ``client_closed`` after ``shutdown()``. Never waits for the network.
        """
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

    def identify(
        self,
        *,
        anonymous_id: str | None = None,
        external_id: str | None = None,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue an ``identify`` event (``traits`` merge into the profile); its ``message_id``.

        Raises like :meth:`track`.
        """
        return self._enqueue(
            build_identify(
                anonymous_id=anonymous_id, external_id=external_id, user_id=user_id, traits=traits
            )
        )

    def alias(
        self,
        user_id: str,
        *,
        anonymous_id: str | None = None,
        previous_id: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Attach ``anonymous_id`` or ``previous_id`` to the profile ``user_id``, now.

        Calls ``POST /v1/identify/alias`` directly (not through the queue; needs a
        ``gflux_secret_`` key), retrying like batches do, and returns the server's answer
        (``{"alias": {..., "merged_at": ...}}``). Raises ``GFluxError`` with the server's code,
        e.g. ``alias_conflict`` (409) when the id belongs to another active profile.
        """
        if self._core._closing:
            raise GFluxError("the client was shut down", code="client_closed")
        request = self._core._alias_request(user_id, anonymous_id, previous_id, request_id)
        reply = transport.send(self._http, request, self._core._policy, self._sleep)
        return self._core._alias_answer(reply)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; wait until each of those events was sent or failed.

        Returns True when they all were, False if ``timeout`` seconds passed first (they keep
        going in the background). Must not be called from ``on_error``.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() cannot wait from the flusher thread (on_error)")
        deadline = None if timeout is None else time.monotonic() + timeout
        core = self._core
        with self._cv:
            target = core._queue.last_seq
            if core._done_seq >= target:
                return True
            core._flush_target = max(core._flush_target, target)
            self._cv.notify_all()
            while core._done_seq < target:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    return False
                wait = _POLL
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                self._cv.wait(wait)
        return True

    def shutdown(self, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Send what is queued, within ``timeout`` seconds, and stop; safe to call again.

        Returns True when every queued event was sent or failed for good in time. Otherwise
        the events still queued are reported to ``on_error`` (code ``shutdown_timeout``) and
        dropped, and a request still in flight is left to the daemon thread: the process can
        exit, it never hangs here for longer than ``timeout``. Afterwards ``track()``,
        ``identify()`` and ``alias()`` raise ``client_closed``.
        """
        core = self._core
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            if core._shutdown_result is not None or core._closing:
                return bool(core._shutdown_result)
            core._closing = True
            self._cv.notify_all()
            thread = self._thread
        atexit.unregister(self._atexit_hook)
        if thread is None:
            self._http.close()
            core._shutdown_result = True
            return True
        if threading.current_thread() is thread:
            # Called from on_error: the flusher finishes the queue and exits by itself.
            return False
        delivered = self.flush(timeout)
        if not delivered:
            with self._cv:
                leftovers = core._give_up()
                self._cv.notify_all()
            core._report_unsent(leftovers, "shutdown() ran out of time before these were sent")
        self._stop.set()
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            # The flusher is inside an HTTP request. It is a daemon thread (the process may
            # exit meanwhile) and reports that batch and closes the connection pool itself.
            transport.log.warning("getfluxly shutdown: a batch is still being sent")
        core._shutdown_result = delivered
        return delivered

    def close(self) -> None:
        """Same as :meth:`shutdown` with its default timeout."""
        self.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<Client {self._core.describe()}>"

    # -- the flusher -----------------------------------------------------------------------------

    def _enqueue(self, event: EncodedEvent) -> str:
        core = self._core
        with self._cv:
            if core._closing:
                raise GFluxError("the client was shut down", code="client_closed")
            core._queue.put(event, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="getfluxly-flusher", daemon=True
                )
                self._thread.start()
            if len(core._queue) >= core.flush_at or len(core._queue) == 1:
                # The first event starts the flush_interval clock; flush_at sends now.
                self._cv.notify_all()
        return event.message_id

    def _run(self) -> None:
        core = self._core
        try:
            while True:
                with self._cv:
                    while not core._due(time.monotonic()):
                        if core._abandoned or (core._closing and not core._queue):
                            return
                        self._cv.wait(core._idle_time(time.monotonic()))
                    if core._abandoned:
                        return
                    batch = core._queue.take_batch()
                    if batch is None:
                        continue
                    core._in_flight = batch
                try:
                    core._deliver_sync(self._http, batch, self._sleep)
                except Exception:  # a bug here must not kill the flusher and lose the queue
                    transport.log.exception("getfluxly flusher failed on a batch")
                    core._report(
                        batch.lost(GFluxError("internal error sending batch", code="sdk_error"))
                    )
                finally:
                    with self._cv:
                        core._in_flight = None
                        core._done_seq = max(core._done_seq, batch.last_seq)
                        self._cv.notify_all()
        finally:
            self._http.close()


class _AtExit:
    """The atexit hook: a weak reference, so registering does not keep a client alive."""

    def __init__(self, ref: weakref.ref[Client]) -> None:
        self._ref = ref

    def __call__(self) -> None:
        _shutdown_at_exit(self._ref)
