"""The queue and batch cutting (getfluxly.batching), without a server."""

from __future__ import annotations

import json

import pytest

from getfluxly import GFluxError
from getfluxly.batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    Batch,
    EventQueue,
    batch_size,
    rejected_events,
)
from getfluxly.events import build_track


def _fill(queue: EventQueue, count: int, pad: int = 0) -> None:
    for i in range(count):
        queue.put(build_track("x", user_id=str(i), properties={"p": "y" * pad}), float(i))


def test_overflow() -> None:
    queue = EventQueue(3)
    _fill(queue, 3)
    with pytest.raises(GFluxError) as caught:
        queue.put(build_track("x", user_id="late"), 0.0)
    assert caught.value.code == "queue_overflow"
    assert caught.value.retryable
    assert len(queue) == 3
    assert queue.last_seq == 3


def test_batches_are_cut_at_100_events() -> None:
    queue = EventQueue(1000)
    _fill(queue, 250)
    sizes = []
    while (batch := queue.take_batch()) is not None:
        sizes.append(len(batch))
    assert sizes == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 50]


def test_batches_are_cut_at_256_kb() -> None:
    queue = EventQueue(1000)
    _fill(queue, 40, pad=30_000)
    batches = []
    while (batch := queue.take_batch()) is not None:
        batches.append(batch)
    assert sum(len(b) for b in batches) == 40
    for batch in batches:
        body = batch.body()
        assert len(body) <= MAX_BATCH_BYTES
        # Cut as late as possible: one more event would not have fitted.
        assert len(body) == batch_size(batch.events)
    assert [len(b) for b in batches[:-1]] == [8] * (len(batches) - 1)


def test_each_attempt_restamps_sent_at_and_nothing_else() -> None:
    queue = EventQueue(10)
    _fill(queue, 3)
    batch = queue.take_batch()
    assert batch is not None
    first, retry = json.loads(batch.body())["events"], json.loads(batch.body())["events"]
    assert [e["message_id"] for e in first] == batch.message_ids
    assert len({e["sent_at"] for e in first}) == 1  # one stamp per attempt
    # A retry differs only in sent_at (the server corrects clock skew with it); the
    # idempotency key is what makes it the same request.
    strip = [{k: v for k, v in e.items() if k != "sent_at"} for e in first]
    assert strip == [{k: v for k, v in e.items() if k != "sent_at"} for e in retry]


def test_each_batch_has_its_own_key() -> None:
    queue = EventQueue(10)
    _fill(queue, 4)
    first, second = queue.take_batch(max_events=2), queue.take_batch(max_events=2)
    assert first is not None
    assert second is not None
    assert first.key != second.key
    assert len(first.key) == 32


def test_split() -> None:
    queue = EventQueue(10)
    _fill(queue, 5)
    batch = queue.take_batch()
    assert batch is not None
    left, right = batch.split()
    assert left.message_ids + right.message_ids == batch.message_ids
    assert len({batch.key, left.key, right.key}) == 3
    with pytest.raises(ValueError, match="cannot be split"):
        Batch(left.events[:1]).split()


def test_rejected_events_maps_indexes_to_events() -> None:
    queue = EventQueue(10)
    _fill(queue, 3)
    batch = queue.take_batch()
    assert batch is not None
    answer = {
        "accepted": 2,
        "rejected": 1,
        "errors": [{"index": 1, "error": "validation_error", "detail": "bad"}],
        "request_id": "req_1",
    }
    [error] = rejected_events(batch, answer)
    assert error.code == "validation_error"
    assert error.message == "bad"
    assert error.details["message_ids"] == [batch.message_ids[1]]
    assert error.details["events"][0]["user_id"] == "1"
    assert error.details["request_id"] == "req_1"
    assert rejected_events(batch, {"accepted": 3, "rejected": 0}) == []
    assert rejected_events(batch, None) == []
