"""The AsyncClient against the ingest fake (the sync suite's cases, with await)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable

import pytest

from flux_testkit.ingest_fake import BATCH_PATH, IngestFake
from getfluxly import AsyncClient, Client, GFluxError

from .conftest import Errors, record_sleeps

MakeAsyncClient = Callable[..., AsyncClient]

HANG_GUARD = 15.0  # "never returns" guards, not speed requirements


async def test_track_and_identify_arrive(
    make_async_client: MakeAsyncClient, ingest: IngestFake
) -> None:
    client = make_async_client()
    message_id = await client.track("signed_up", external_id="u1", properties={"plan": "pro"})
    identify_id = await client.identify(external_id="u1", traits={"name": "Ada"})
    assert await client.flush()
    track, identify = ingest.events
    assert (track["message_id"], track["event"]) == (message_id, "signed_up")
    assert (identify["message_id"], identify["traits"]) == (identify_id, {"name": "Ada"})
    [request] = ingest.requests
    assert request.headers["authorization"] == f"Bearer {ingest.secret_key}"
    assert request.idempotency_key


async def test_many_tasks_each_event_exactly_once(
    make_async_client: MakeAsyncClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_async_client(max_queue_size=5000)

    async def worker(n: int) -> list[str]:
        ids = []
        for i in range(200):
            ids.append(await client.track("item_viewed", anonymous_id=f"t{n}", properties={"i": i}))
            if i % 50 == 0:
                await asyncio.sleep(0)  # interleave with the flusher and the other workers
        return ids

    sent = [m for ids in await asyncio.gather(*(worker(n) for n in range(8))) for m in ids]
    assert await client.flush(timeout=HANG_GUARD)
    received = [e["message_id"] for e in ingest.events]
    assert len(received) == len(sent) == 1600
    assert set(received) == set(sent)
    assert ingest.duplicates == ingest.replays == 0
    assert not errors


async def test_503_twice_then_accepted(
    make_async_client: MakeAsyncClient, ingest: IngestFake
) -> None:
    client = make_async_client()
    delays = record_sleeps(client)
    ingest.fail_next(503, times=2)
    ids = [await client.track("clicked", user_id="p1") for _ in range(3)]
    assert await client.flush()
    attempts = ingest.requests_to(BATCH_PATH)
    assert len(attempts) == 3
    assert len({a.idempotency_key for a in attempts}) == 1
    # The same request but for sent_at, restamped on each attempt (clock-skew correction).
    assert len({_without_sent_at(a.body) for a in attempts}) == 1
    assert [e["message_id"] for e in ingest.events] == ids
    assert len(delays) == 2
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0


async def test_429_retry_after_is_honoured(
    make_async_client: MakeAsyncClient, ingest: IngestFake
) -> None:
    client = make_async_client()
    delays = record_sleeps(client)
    ingest.fail_next(429, retry_after=4)
    await client.track("clicked", user_id="p1")
    assert await client.flush()
    assert delays == [4.0]
    assert len(ingest.events) == 1


async def test_reply_lost_after_processing_is_replayed(
    make_async_client: MakeAsyncClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_async_client()
    record_sleeps(client)
    ingest.reset_next(after_processing=True)
    await client.track("clicked", user_id="p1")
    assert await client.flush()
    assert len(ingest.events) == 1
    assert ingest.replays == 1
    assert not errors


async def test_retries_exhausted_are_reported(
    make_async_client: MakeAsyncClient,
    ingest: IngestFake,
    errors: Errors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_async_client()
    record_sleeps(client)
    ingest.fail_next(500, times=3)
    message_id = await client.track("clicked", user_id="p1")
    with caplog.at_level(logging.ERROR, logger="getfluxly"):
        assert await client.flush()
    [error] = errors
    assert (error.code, error.details["message_ids"]) == ("server_error", [message_id])
    assert error.details["attempts"] == 3


async def test_server_down_never_blocks_track(
    dead_url: str, errors: Errors, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncClient("gflux_secret_x", api_host=dead_url, flush_at=5, on_error=errors)
    started = time.monotonic()
    ids = [await client.track("clicked", user_id="p1") for _ in range(200)]
    assert time.monotonic() - started < HANG_GUARD
    with caplog.at_level(logging.CRITICAL, logger="getfluxly"):
        started = time.monotonic()
        result = await client.shutdown(timeout=1.0)
        assert time.monotonic() - started < HANG_GUARD
    assert result in (True, False)
    # Every event was reported lost exactly once (the in-flight batch included).
    assert sorted(errors.message_ids) == sorted(ids)
    assert {e.code for e in errors} <= {"network_error", "shutdown_timeout"}


async def test_hanging_server_does_not_hang_shutdown(
    make_async_client: MakeAsyncClient,
    ingest: IngestFake,
    errors: Errors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_async_client(timeout=30)
    ingest.slow_next(60)
    message_id = await client.track("clicked", user_id="p1")
    await client.flush(timeout=0.2)
    with caplog.at_level(logging.CRITICAL, logger="getfluxly"):
        started = time.monotonic()
        assert await client.shutdown(timeout=0.5) is False
        assert time.monotonic() - started < HANG_GUARD
    [error] = errors
    assert (error.code, error.details["message_ids"]) == ("shutdown_timeout", [message_id])


async def test_queue_overflow(make_async_client: MakeAsyncClient, ingest: IngestFake) -> None:
    client = make_async_client(flush_at=100, flush_interval=60, max_queue_size=3)
    for i in range(3):
        await client.track("clicked", user_id=str(i))
    with pytest.raises(GFluxError) as caught:
        await client.track("clicked", user_id="late")
    assert caught.value.code == "queue_overflow"
    assert await client.flush()
    assert len(ingest.events) == 3


async def test_validation_errors_raise_at_track(
    make_async_client: MakeAsyncClient, ingest: IngestFake
) -> None:
    client = make_async_client()
    with pytest.raises(GFluxError) as caught:
        await client.track("signedUp", user_id="p1")
    assert caught.value.code == "validation_error"
    assert "did you mean 'signed_up'" in caught.value.message
    with pytest.raises(GFluxError, match="at least one of"):
        await client.identify(traits={"a": 1})
    assert await client.flush()
    assert ingest.requests == []


async def test_batches_respect_count_and_size(make_async_client: MakeAsyncClient) -> None:
    with IngestFake(max_batch_bytes=256_000) as strict:
        client = make_async_client(
            api_host=strict.url, token=strict.secret_key, flush_at=1000, flush_interval=60
        )
        for i in range(150):
            await client.track("small", user_id=str(i))
        for i in range(10):
            await client.track("large", user_id=str(i), properties={"blob": "x" * 30_000})
        assert await client.flush()
        requests = strict.requests_to(BATCH_PATH)
        assert len(requests[0].json["events"]) == 100
        assert all(len(r.json["events"]) <= 100 and len(r.body) <= 256_000 for r in requests)
        assert len(strict.events) == 160


async def test_flush_interval_sends_without_flush(
    make_async_client: MakeAsyncClient, ingest: IngestFake
) -> None:
    client = make_async_client(flush_at=100, flush_interval=0.1)
    await client.track("clicked", user_id="p1")
    deadline = time.monotonic() + HANG_GUARD
    while not ingest.events and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(ingest.events) == 1


async def test_alias(make_async_client: MakeAsyncClient, ingest: IngestFake) -> None:
    client = make_async_client()
    answer = await client.alias("prof_1", previous_id="legacy-7")
    assert answer["alias"]["previous_id"] == "legacy-7"
    assert ingest.aliases[0]["user_id"] == "prof_1"


async def test_alias_conflict(make_async_client: MakeAsyncClient, ingest: IngestFake) -> None:
    ingest.claim("anon-1", "prof_other")
    client = make_async_client()
    with pytest.raises(GFluxError) as caught:
        await client.alias("prof_me", anonymous_id="anon-1")
    assert (caught.value.code, caught.value.status) == ("alias_conflict", 409)


async def test_async_with_and_shutdown_twice(ingest: IngestFake) -> None:
    async with AsyncClient(ingest.secret_key, api_host=ingest.url) as client:
        await client.track("clicked", user_id="p1")
    assert len(ingest.events) == 1
    assert await client.shutdown() is True
    await client.aclose()
    with pytest.raises(GFluxError) as caught:
        await client.track("clicked", user_id="p1")
    assert caught.value.code == "client_closed"
    with pytest.raises(GFluxError):
        await client.alias("p", anonymous_id="a")


async def test_unused_client_shuts_down(make_async_client: MakeAsyncClient) -> None:
    assert await make_async_client().shutdown() is True


def test_same_signatures_as_client() -> None:
    for name in ("__init__", "track", "identify", "alias", "flush", "shutdown"):
        sync = inspect.signature(getattr(Client, name))
        asyn = inspect.signature(getattr(AsyncClient, name))
        assert [(p.name, p.kind, p.default) for p in sync.parameters.values()] == [
            (p.name, p.kind, p.default) for p in asyn.parameters.values()
        ], name
        if name != "__init__":
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name))


def _without_sent_at(body: bytes) -> str:
    events = json.loads(body)["events"]
    return json.dumps([{k: v for k, v in e.items() if k != "sent_at"} for e in events])
