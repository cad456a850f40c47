"""What :class:`~getfluxly.Client` and :class:`~getfluxly.AsyncClient` share: options,
the flusher's schedule, requests, and what happens to a batch after its last attempt.

Nothing here does I/O or waits except :meth:`ClientBase._deliver_sync`, the sync delivery
used by the sync client's flusher thread and by the async client's exit hook.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import httpx

from getfluxly import transport
from getfluxly.batching import Batch, EventQueue, QueuedEvent, decode_answer, rejected_events
from getfluxly.errors import GFluxError
from getfluxly.events import encode
from getfluxly.transport import Reply, Request, RetryPolicy

log = logging.getLogger("getfluxly")

#: Where ``getfluxly dev`` serves the API (also what it prints as ``GETFLUXLY_URL``).
DEFAULT_API_HOST = "http://127.0.0.1:8000"
#: Read when ``api_host`` is not given.
API_HOST_ENV = "GETFLUXLY_URL"
#: How long ``shutdown()`` (and the exit hook) may take by default, in seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

BATCH_PATH = "/v1/events/batch"
ALIAS_PATH = "/v1/identify/alias"

ErrorCallback = Callable[[GFluxError], object]


def resolve_api_host(api_host: str | None) -> str:
    host = api_host if api_host is not None else os.environ.get(API_HOST_ENV) or DEFAULT_API_HOST
    host = host.strip().rstrip("/")
    url = httpx.URL(host)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"api_host must be an http:// or https:// URL, not {host!r}")
    return host


def _positive(name: str, value: float, *, integer: bool = False, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'0 or more' if zero else 'positive'}, not {value!r}")


def _id(field: str, value: object, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise GFluxError(
            f"{field} must be a non-empty string", code="validation_error", details={"field": field}
        )
    return value


class ClientBase:
    """Options and the I/O-free half of a client (see the subclasses' docstrings)."""

    def __init__(
        self,
        token: str,
        api_host: str | None,
        flush_at: int,
        flush_interval: float,
        max_retries: int,
        timeout: float,
        max_queue_size: int,
        on_error: ErrorCallback | None,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a project key (gflux_secret_... or gflux_pub_...)")
        _positive("flush_at", flush_at, integer=True)
        _positive("flush_interval", flush_interval)
        _positive("max_retries", max_retries, integer=True, zero=True)
        _positive("timeout", timeout)
        _positive("max_queue_size", max_queue_size, integer=True)
        if on_error is not None and not callable(on_error):
            raise TypeError("on_error must be callable")
        self.api_host = resolve_api_host(api_host)
        self.flush_at = flush_at
        self.flush_interval = float(flush_interval)
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.max_queue_size = max_queue_size
        self._on_error = on_error
        self._headers = transport.headers(token)
        self._policy = RetryPolicy(max_retries=max_retries)
        self._queue = EventQueue(max_queue_size)
        # Flush bookkeeping, in queue sequence numbers (see batching): every event up to
        # _done_seq was sent or failed for good; flush() asked for everything up to
        # _flush_target to go out now.
        self._done_seq = 0
        self._flush_target = 0
        self._in_flight: Batch | None = None
        # shutdown() was called: no new events; send what is queued, then stop.
        self._closing = False
        # shutdown() ran out of time: stop without sending what is left.
        self._abandoned = False
        self._shutdown_result: bool | None = None

    def describe(self) -> str:
        """For the clients' ``repr``: where, whether open, how much is queued (no token)."""
        state = "closed" if self._closing else "open"
        return f"{self.api_host} {state}, {len(self._queue)} queued"

    # -- the flusher's schedule (call with the queue guarded) --------------------------------

    def _due(self, now: float) -> bool:
        """Whether the flusher should cut a batch now."""
        queued = len(self._queue)
        if not queued:
            return False
        oldest_seq = self._queue.last_seq - queued + 1
        oldest_at = self._queue.oldest_queued_at
        return (
            queued >= self.flush_at
            or oldest_seq <= self._flush_target
            or self._closing
            or (oldest_at is not None and now - oldest_at >= self.flush_interval)
        )

    def _idle_time(self, now: float) -> float | None:
        """How long the flusher may sleep when not :meth:`_due` (``None``: until woken)."""
        oldest_at = self._queue.oldest_queued_at
        if oldest_at is None:
            return None
        return max(oldest_at + self.flush_interval - now, 0.0)

    def _give_up(self) -> list[QueuedEvent]:
        """Mark the client abandoned; the queued events, now counted as done."""
        self._abandoned = True
        leftovers = self._queue.drain()
        self._done_seq = max(self._done_seq, self._queue.last_seq)
        return leftovers

    # -- requests ------------------------------------------------------------------------------

    def _batch_request(self, batch: Batch) -> Request:
        return Request(BATCH_PATH, batch.body, {"X-Idempotency-Key": batch.key})

    def _alias_request(
        self, user_id: object, anonymous_id: object, previous_id: object, request_id: object
    ) -> Request:
        body: dict[str, Any] = {"user_id": _id("user_id", user_id, required=True)}
        source = {
            "anonymous_id": _id("anonymous_id", anonymous_id),
            "previous_id": _id("previous_id", previous_id),
        }
        if not any(source.values()):
            raise GFluxError(
                "alias() needs anonymous_id or previous_id: the id to attach to user_id",
                code="validation_error",
                details={"field": "anonymous_id"},
            )
        body.update({k: v for k, v in source.items() if v is not None})
        if request_id is not None:
            body["request_id"] = _id("request_id", request_id)
        return Request(ALIAS_PATH, encode(body))

    @staticmethod
    def _alias_answer(reply: Reply) -> dict[str, Any]:
        answer = decode_answer(reply.body)
        return answer if isinstance(answer, dict) else {}

    # -- after a batch's last attempt ------------------------------------------------------

    def _settle(self, batch: Batch, outcome: Reply | GFluxError) -> list[Batch]:
        """Report what ``outcome`` cost; the batches to send next (halves after a 413)."""
        if isinstance(outcome, Reply):
            for error in rejected_events(batch, decode_answer(outcome.body)):
                self._report(error)
            return []
        if outcome.code == "payload_too_large" and len(batch) > 1:
            # The server counts size differently than we do (or lowered its limit): the
            # whole batch was refused, so nothing of it was stored and halves with new keys
            # are safe (message_id dedupe covers the rest).
            log.warning("batch of %d events refused as too large; splitting it", len(batch))
            return list(batch.split())
        self._report(batch.lost(outcome))
        return []

    def _report(self, error: GFluxError) -> None:
        """Log an event loss and pass it to ``on_error``; never raises."""
        count = len(error.details.get("message_ids") or ()) or "some"
        log.error("getfluxly dropped %s event(s): %s", count, error)
        if self._on_error is None:
            return
        try:
            self._on_error(error)
        except Exception:
            log.exception("getfluxly on_error callback raised")

    def _report_unsent(self, events: list[QueuedEvent], reason: str) -> None:
        if events:
            self._report(Batch(tuple(events)).lost(GFluxError(reason, code="shutdown_timeout")))

    def _deliver_sync(
        self, http: httpx.Client, batch: Batch, sleep: Callable[[float], bool]
    ) -> None:
        pending = [batch]
        while pending:
            current = pending.pop(0)
            outcome: Reply | GFluxError
            try:
                outcome = transport.send(http, self._batch_request(current), self._policy, sleep)
            except GFluxError as exc:
                outcome = exc
            pending[:0] = self._settle(current, outcome)
