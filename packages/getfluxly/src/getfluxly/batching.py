"""The event queue and how it is cut into batches for ``POST /v1/events/batch``.

:class:`EventQueue` is a plain FIFO with a size bound and sequence numbers; it takes no locks
(the sync client guards it with its condition variable, the async client only touches it from
its event loop). Sequence numbers let ``flush()`` wait for "everything queued so far": one
flusher sends batches in queue order, so when the batch holding event *n* is finished, so is
every event before it.

:meth:`EventQueue.take_batch` cuts at most :data:`MAX_BATCH_EVENTS` events whose request body
stays within :data:`MAX_BATCH_BYTES`. Each :class:`Batch` gets one random idempotency key, and
its body is built once, at its first send, and reused byte for byte by every retry: a retry is
the same request, so the server's replay of the original answer is the right answer to it.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from getfluxly.errors import GFluxError
from getfluxly.events import EncodedEvent, format_sent_at, stamp_sent_at

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "Batch",
    "EventQueue",
    "QueuedEvent",
    "rejected_events",
]

#: Spec: ≤ 100 events per batch.
MAX_BATCH_EVENTS = 100
#: Spec: ≤ 256 KB per batch. Read as 256 000 bytes, the smaller of the two readings of "KB":
#: a batch the server finds too large is refused whole (413).
MAX_BATCH_BYTES = 256_000

_HEAD = b'{"events":['
_TAIL = b"]}"


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event waiting in the queue."""

    event: EncodedEvent
    #: Position in the queue's history (1, 2, 3...): ``flush()`` waits on these.
    seq: int
    #: ``time.monotonic()`` when it was queued: the flusher sends it ``flush_interval`` later.
    queued_at: float


def batch_size(events: Iterable[QueuedEvent]) -> int:
    """Bytes of the request body that carries ``events``."""
    sizes = [q.event.size for q in events]
    return len(_HEAD) + sum(sizes) + max(len(sizes) - 1, 0) + len(_TAIL)


@dataclass(eq=False)
class Batch:
    """Events sent together under one ``X-Idempotency-Key``."""

    events: tuple[QueuedEvent, ...]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[QueuedEvent]:
        return iter(self.events)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq

    @property
    def message_ids(self) -> list[str]:
        return [q.event.message_id for q in self.events]

    def body(self) -> bytes:
        """The request body, with ``sent_at`` stamped now: on a retry too, because the server
        takes (its receipt time - sent_at) as the client's clock skew, and a stale stamp would
        shift every event by the retry's delay. The idempotency key, not the bytes, is what
        makes a retry the same request."""
        sent_at = format_sent_at()
        return _HEAD + b",".join(stamp_sent_at(q.event.data, sent_at) for q in self.events) + _TAIL

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, each a new request with its own key (for a 413 on this one)."""
        if len(self.events) < 2:
            raise ValueError("a batch of one event cannot be split")
        half = len(self.events) // 2
        return Batch(self.events[:half]), Batch(self.events[half:])

    def lost(self, error: GFluxError) -> GFluxError:
        """``error`` with the events it cost attached to ``details``."""
        return error.with_details(
            message_ids=self.message_ids,
            events=[q.event.as_dict() for q in self.events],
            idempotency_key=self.key,
        )


class EventQueue:
    """A bounded FIFO of events, cut into :class:`Batch` es. Not thread-safe by itself."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.max_size = max_size
        self._events: deque[QueuedEvent] = deque()
        self._last_seq = 0

    def __len__(self) -> int:
        return len(self._events)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event ever queued (0: none yet)."""
        return self._last_seq

    @property
    def oldest_queued_at(self) -> float | None:
        return self._events[0].queued_at if self._events else None

    def put(self, event: EncodedEvent, now: float) -> int:
        """Queue ``event``; its sequence number. Raises ``queue_overflow`` when full."""
        if len(self._events) >= self.max_size:
            raise GFluxError(
                f"{len(self._events)} events are already waiting to be sent (max_queue_size); "
                "the server may be down or slow. The event was not queued",
                code="queue_overflow",
                retryable=True,
                details={"message_id": event.message_id, "max_queue_size": self.max_size},
            )
        self._last_seq += 1
        self._events.append(QueuedEvent(event, self._last_seq, now))
        return self._last_seq

    def take_batch(
        self, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES
    ) -> Batch | None:
        """Remove and return the oldest events that fit one batch (``None`` if empty).

        A batch always holds at least one event: events are size-checked when queued, so a
        single one always fits.
        """
        if not self._events:
            return None
        taken: list[QueuedEvent] = []
        size = len(_HEAD) + len(_TAIL)
        while self._events and len(taken) < max_events:
            extra = self._events[0].event.size + (1 if taken else 0)
            if taken and size + extra > max_bytes:
                break
            taken.append(self._events.popleft())
            size += extra
        return Batch(tuple(taken))

    def drain(self) -> list[QueuedEvent]:
        """Remove and return everything queued."""
        events = list(self._events)
        self._events.clear()
        return events


def rejected_events(batch: Batch, answer: Any) -> list[GFluxError]:
    """One ``GFluxError`` per event the server refused in a 202 ``answer`` to ``batch``.

    ``answer`` is the decoded body: ``{"accepted", "rejected", "errors": [{"index", "error",
    "detail"}], "request_id"}``. Entries with an index outside the batch are reported
    without an event rather than dropped.
    """
    if not isinstance(answer, Mapping):
        return []
    errors = answer.get("errors")
    if not isinstance(errors, list):
        return []
    request_id = answer.get("request_id")
    found: list[GFluxError] = []
    for entry in errors:
        if not isinstance(entry, Mapping):
            continue
        index = entry.get("index")
        code = entry.get("error")
        detail = entry.get("detail")
        details: dict[str, Any] = {
            "status": 202,
            "request_id": request_id,
            "index": index,
            "idempotency_key": batch.key,
        }
        if isinstance(index, int) and 0 <= index < len(batch.events):
            event = batch.events[index].event
            details["message_ids"] = [event.message_id]
            details["events"] = [event.as_dict()]
        found.append(
            GFluxError(
                detail if isinstance(detail, str) and detail else "event rejected by the server",
                code=code if isinstance(code, str) and code else "validation_error",
                details=details,
            )
        )
    return found


def decode_answer(body: bytes) -> Any:
    """A JSON body, or ``None`` when it is not JSON."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
