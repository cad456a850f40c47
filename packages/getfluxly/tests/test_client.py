"""The sync Client against the ingest fake."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from flux_testkit.ingest_fake import BATCH_PATH, IngestFake
from getfluxly import Client, GFluxError

from .conftest import Errors, record_sleeps

MakeClient = Callable[..., Client]

# Hang guards only: generous bounds that catch "never returns", not a speed requirement.
HANG_GUARD = 15.0


def _batch_bodies(fake: IngestFake) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests_to(BATCH_PATH)]


def test_track_and_identify_arrive(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    message_id = client.track(
        "signed_up", external_id="user_42", properties={"plan": "pro"}, context={"ip": "::1"}
    )
    identify_id = client.identify(external_id="user_42", traits={"email": "ada@example.com"})
    assert client.flush()
    track, identify = ingest.events
    assert track["message_id"] == message_id
    assert (track["type"], track["event"], track["external_id"]) == (
        "track",
        "signed_up",
        "user_42",
    )
    assert track["properties"] == {"plan": "pro"}
    assert track["context"]["ip"] == "::1"
    assert track["sent_at"].endswith("Z")
    assert identify["message_id"] == identify_id
    assert identify["type"] == "identify"
    assert identify["traits"] == {"email": "ada@example.com"}
    [request] = ingest.requests
    assert request.headers["authorization"] == f"Bearer {ingest.secret_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("getfluxly-python/")
    assert request.idempotency_key
    assert not ingest.problems


def test_publishable_key_can_ingest(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client(token=ingest.publishable_key)
    client.track("page_viewed", anonymous_id="anon-1")
    assert client.flush()
    assert len(ingest.events) == 1


def test_many_threads_each_event_exactly_once(
    make_client: MakeClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_client(max_queue_size=5000)
    sent: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = [
            client.track("item_viewed", anonymous_id=f"t{n}", properties={"i": i})
            for i in range(250)
        ]
        with lock:
            sent.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=HANG_GUARD)
    received = [e["message_id"] for e in ingest.events]
    assert len(received) == len(sent) == 2000
    assert set(received) == set(sent)
    # Nothing arrived twice, not even as a duplicate the server had to drop.
    submitted = [e["message_id"] for body in _batch_bodies(ingest) for e in body["events"]]
    assert sorted(submitted) == sorted(sent)
    assert ingest.duplicates == ingest.replays == 0
    assert not errors
    # Events of one thread keep their order.
    by_thread = [e["properties"]["i"] for e in ingest.events if e["anonymous_id"] == "t3"]
    assert by_thread == list(range(250))


def test_503_twice_then_accepted(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    delays = record_sleeps(client)
    ingest.fail_next(503, times=2)
    ids = [client.track("clicked", user_id="p1", properties={"n": n}) for n in range(3)]
    assert client.flush()
    attempts = ingest.requests_to(BATCH_PATH)
    assert len(attempts) == 3
    assert len({a.idempotency_key for a in attempts}) == 1
    # The same request but for sent_at, restamped on each attempt (clock-skew correction).
    assert len({_without_sent_at(a.body) for a in attempts}) == 1
    assert [e["message_id"] for e in ingest.events] == ids
    # Jittered exponential backoff: retry 1 in [0.25, 0.5], retry 2 in [0.5, 1].
    assert len(delays) == 2
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0


def test_429_retry_after_is_honoured(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    delays = record_sleeps(client)
    ingest.fail_next(429, retry_after=7)
    client.track("clicked", user_id="p1")
    assert client.flush()
    assert delays == [7.0]
    assert len(ingest.events) == 1


@pytest.mark.parametrize("status", [408, 425, 500, 502, 504])
def test_other_transient_statuses_retry(
    make_client: MakeClient, ingest: IngestFake, status: int
) -> None:
    client = make_client()
    record_sleeps(client)
    ingest.fail_next(status)
    client.track("clicked", user_id="p1")
    assert client.flush()
    assert len(ingest.requests_to(BATCH_PATH)) == 2
    assert len(ingest.events) == 1


def test_retry_after_beyond_cap_drops_with_retry_after_ms(
    make_client: MakeClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_client()
    delays = record_sleeps(client)
    ingest.fail_next(429, retry_after=3600)
    message_id = client.track("clicked", user_id="p1")
    assert client.flush()
    assert delays == []
    [error] = errors
    assert (error.code, error.retryable, error.retry_after_ms) == ("rate_limited", True, 3_600_000)
    assert error.details["message_ids"] == [message_id]


def test_retries_exhausted_are_reported(
    make_client: MakeClient, ingest: IngestFake, errors: Errors, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(max_retries=1)
    delays = record_sleeps(client)
    ingest.fail_next(503, times=5)
    ids = [client.track("clicked", user_id="p1") for _ in range(2)]
    with caplog.at_level(logging.ERROR, logger="getfluxly"):
        assert client.flush()
    assert len(ingest.requests_to(BATCH_PATH)) == 2
    assert len(delays) == 1
    [error] = errors
    assert error.code == "server_error"
    assert error.details["message_ids"] == ids
    assert error.details["attempts"] == 2
    assert [e["event"] for e in error.details["events"]] == ["clicked", "clicked"]
    assert "dropped 2 event(s)" in caplog.text


def test_reply_lost_after_processing_is_replayed(
    make_client: MakeClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_client()
    record_sleeps(client)
    ingest.reset_next(after_processing=True)
    ingest.fail_next(503, after_processing=True)
    ids = [client.track("clicked", user_id="p1") for _ in range(3)]
    assert client.flush()
    assert [e["message_id"] for e in ingest.events] == ids
    assert ingest.replays == 2
    assert len({r.idempotency_key for r in ingest.requests_to(BATCH_PATH)}) == 1
    assert not errors


def test_connection_reset_is_retried(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    delays = record_sleeps(client)
    ingest.reset_next()
    client.track("clicked", user_id="p1")
    assert client.flush()
    assert len(delays) == 1
    assert len(ingest.events) == 1


def test_slow_server_times_out_and_is_retried(
    make_client: MakeClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_client(timeout=0.3)
    record_sleeps(client)
    ingest.slow_next(1.0)
    client.track("clicked", user_id="p1")
    assert client.flush(timeout=HANG_GUARD)
    assert len(ingest.events) == 1
    assert not errors
    # The first attempt is processed late, and only then: the server replays it.
    deadline = time.monotonic() + HANG_GUARD
    while ingest.replays == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ingest.replays == 1
    assert len(ingest.events) == 1


def test_server_down_never_blocks_track(
    dead_url: str, errors: Errors, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client("gflux_secret_x", api_host=dead_url, flush_at=5, on_error=errors)
    started = time.monotonic()
    ids = [client.track("clicked", user_id="p1", properties={"i": i}) for i in range(200)]
    assert time.monotonic() - started < HANG_GUARD
    with caplog.at_level(logging.CRITICAL, logger="getfluxly"):
        started = time.monotonic()
        result = client.shutdown(timeout=1.0)
        assert time.monotonic() - started < HANG_GUARD
    assert result in (True, False)
    # Every event is accounted for: each was reported lost exactly once (a batch that was
    # in flight when shutdown() gave up is reported by the flusher thread as it ends).
    assert client._thread is not None
    client._thread.join(HANG_GUARD)
    assert sorted(errors.message_ids) == sorted(ids)
    assert {e.code for e in errors} <= {"network_error", "shutdown_timeout"}


def test_hanging_server_does_not_hang_shutdown(
    make_client: MakeClient, ingest: IngestFake, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(timeout=30)
    ingest.slow_next(60)
    client.track("clicked", user_id="p1")
    client.flush(timeout=0.2)  # the batch is in flight now
    with caplog.at_level(logging.CRITICAL, logger="getfluxly"):
        started = time.monotonic()
        assert client.shutdown(timeout=0.5) is False
        assert time.monotonic() - started < HANG_GUARD


def test_queue_overflow(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client(flush_at=100, flush_interval=60, max_queue_size=5)
    for i in range(5):
        client.track("clicked", user_id=str(i))
    with pytest.raises(GFluxError) as caught:
        client.track("clicked", user_id="late")
    assert caught.value.code == "queue_overflow"
    assert caught.value.retryable
    assert ingest.requests == []  # nothing was due yet
    assert client.flush()
    assert len(ingest.events) == 5
    client.track("clicked", user_id="room again")


def test_validation_errors_raise_at_track(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    with pytest.raises(GFluxError) as caught:
        client.track("Signed Up", user_id="p1")
    assert caught.value.code == "validation_error"
    assert "snake_case" in caught.value.message
    with pytest.raises(GFluxError, match="at least one of anonymous_id"):
        client.track("signed_up")
    with pytest.raises(GFluxError, match="traits must be a mapping"):
        client.identify(user_id="p", traits=["x"])  # type: ignore[arg-type]
    assert client.flush()
    assert ingest.requests == []


def test_batches_respect_count_and_size(make_client: MakeClient) -> None:
    with IngestFake(max_batch_bytes=256_000) as strict:
        client = make_client(
            api_host=strict.url, token=strict.secret_key, flush_at=1000, flush_interval=60
        )
        for i in range(250):
            client.track("small", user_id=str(i))
        for i in range(20):
            client.track("large", user_id=str(i), properties={"blob": "x" * 30_000})
        assert client.flush()
        requests = strict.requests_to(BATCH_PATH)
        counts = [len(r.json["events"]) for r in requests]
        assert counts[:2] == [100, 100]  # small events fill 100-event batches
        assert max(counts) <= 100
        assert all(len(r.body) <= 256_000 for r in requests)
        large = [sum(e["event"] == "large" for e in r.json["events"]) for r in requests]
        assert max(large) <= 8  # ~30 KB each: no more than 8 fit in 256 KB
        assert sum(counts) == 270
        assert len(strict.events) == 270
        assert not strict.problems


def test_413_splits_the_batch(make_client: MakeClient, errors: Errors) -> None:
    # A server whose limit is lower than the spec's: the client halves until it fits.
    with IngestFake(max_batch_bytes=70_000) as small:
        client = make_client(
            api_host=small.url, token=small.secret_key, flush_at=1000, flush_interval=60
        )
        for i in range(6):
            client.track("large", user_id=str(i), properties={"blob": "x" * 20_000})
        assert client.flush()
        assert len(small.events) == 6
        assert not errors
        statuses = [len(r.json["events"]) for r in small.requests_to(BATCH_PATH)]
        assert statuses[0] == 6


def test_rejected_events_are_reported_and_others_kept(
    make_client: MakeClient, errors: Errors
) -> None:
    # A server stricter than the client (2 property keys): the batch is answered 202 with
    # that event in "errors"; the others are stored.
    with IngestFake(max_property_keys=2) as strict:
        client = make_client(api_host=strict.url, token=strict.secret_key)
        good = client.track("ok", user_id="p")
        bad = client.track("too_many", user_id="p", properties={"a": 1, "b": 2, "c": 3})
        assert client.flush()
        assert [e["message_id"] for e in strict.events] == [good]
    [error] = errors
    assert error.code == "validation_error"
    assert "more than 2 keys" in error.message
    assert error.details["message_ids"] == [bad]
    assert error.details["index"] == 1
    assert error.details["events"][0]["event"] == "too_many"


def test_bad_token_is_reported_not_retried(
    make_client: MakeClient, ingest: IngestFake, errors: Errors
) -> None:
    client = make_client(token="gflux_secret_wrong")
    message_id = client.track("clicked", user_id="p1")
    assert client.flush()
    assert len(ingest.requests) == 1
    [error] = errors
    assert (error.code, error.status, error.retryable) == ("unauthenticated", 401, False)
    assert error.details["message_ids"] == [message_id]


def test_on_error_that_raises_is_logged(
    make_client: MakeClient, ingest: IngestFake, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(error: GFluxError) -> None:
        raise RuntimeError("callback bug")

    client = make_client(on_error=explode)
    ingest.fail_next(400)
    with caplog.at_level(logging.ERROR, logger="getfluxly"):
        client.track("clicked", user_id="p1")
        assert client.flush()
    assert "on_error callback raised" in caplog.text
    client.track("clicked", user_id="p2")  # the flusher survived
    assert client.flush()
    assert len(ingest.events) == 1


def test_flush_interval_sends_without_flush(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client(flush_at=100, flush_interval=0.1)
    client.track("clicked", user_id="p1")
    assert ingest.wait_for_events(1, timeout=HANG_GUARD)


def test_flush_at_sends_without_flush(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client(flush_at=5, flush_interval=60)
    for i in range(5):
        client.track("clicked", user_id=str(i))
    assert ingest.wait_for_events(5, timeout=HANG_GUARD)


def test_mutating_arguments_after_track(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    properties: dict[str, Any] = {"step": 1}
    client.track("clicked", user_id="p1", properties=properties)
    properties["step"] = 2
    assert client.flush()
    assert ingest.events[0]["properties"] == {"step": 1}


def test_alias(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    answer = client.alias("prof_1", anonymous_id="anon-1", request_id="r-1")
    assert answer["alias"]["user_id"] == "prof_1"
    assert answer["alias"]["anonymous_id"] == "anon-1"
    assert answer["alias"]["merged_at"]
    [request] = ingest.requests
    assert request.path == "/v1/identify/alias"
    assert request.json == {"user_id": "prof_1", "anonymous_id": "anon-1", "request_id": "r-1"}
    assert client.alias("prof_1", previous_id="old-id")["alias"]["previous_id"] == "old-id"


def test_alias_conflict(make_client: MakeClient, ingest: IngestFake) -> None:
    ingest.claim("anon-1", "prof_other")
    client = make_client()
    with pytest.raises(GFluxError) as caught:
        client.alias("prof_me", anonymous_id="anon-1")
    assert caught.value.code == "alias_conflict"
    assert caught.value.status == 409
    assert not caught.value.retryable
    assert len(ingest.requests) == 1  # not retried


def test_alias_retries_transient_failures(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    delays = record_sleeps(client)
    ingest.fail_next(503)
    assert client.alias("prof_1", anonymous_id="anon-1")["alias"]["user_id"] == "prof_1"
    assert len(delays) == 1


def test_alias_arguments(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    with pytest.raises(GFluxError, match="anonymous_id or previous_id") as caught:
        client.alias("prof_1")
    assert caught.value.code == "validation_error"
    with pytest.raises(GFluxError, match="user_id must be a non-empty string"):
        client.alias("", anonymous_id="a")
    assert ingest.requests == []


def test_alias_needs_a_secret_key(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client(token=ingest.publishable_key)
    with pytest.raises(GFluxError) as caught:
        client.alias("prof_1", anonymous_id="anon-1")
    assert caught.value.code == "wrong_key_type"


def test_shutdown_is_idempotent_and_closes(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    client.track("clicked", user_id="p1")
    assert client.shutdown() is True
    assert client.shutdown() is True
    client.close()
    assert len(ingest.events) == 1
    for call in (
        lambda: client.track("clicked", user_id="p1"),
        lambda: client.identify(user_id="p1"),
        lambda: client.alias("p1", anonymous_id="a"),
    ):
        with pytest.raises(GFluxError) as caught:
            call()
        assert caught.value.code == "client_closed"
    assert client.flush() is True


def test_shutdown_of_an_unused_client(make_client: MakeClient, ingest: IngestFake) -> None:
    assert make_client().shutdown() is True
    assert ingest.requests == []


def test_context_manager(ingest: IngestFake) -> None:
    with Client(ingest.secret_key, api_host=ingest.url) as client:
        client.track("clicked", user_id="p1")
    assert len(ingest.events) == 1


def test_api_host_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GETFLUXLY_URL", raising=False)
    with Client("gflux_secret_x") as client:
        assert client.api_host == "http://127.0.0.1:8000"
    monkeypatch.setenv("GETFLUXLY_URL", "https://events.example.com/")
    with Client("gflux_secret_x") as client:
        assert client.api_host == "https://events.example.com"
    with Client("gflux_secret_x", api_host="http://10.0.0.5:9000") as client:
        assert client.api_host == "http://10.0.0.5:9000"


@pytest.mark.parametrize(
    ("options", "exception"),
    [
        ({"token": ""}, ValueError),
        ({"api_host": "ftp://example.com"}, ValueError),
        ({"api_host": "example.com"}, ValueError),
        ({"flush_at": 0}, ValueError),
        ({"flush_at": 1.5}, TypeError),
        ({"flush_interval": 0}, ValueError),
        ({"max_retries": -1}, ValueError),
        ({"timeout": float("inf")}, ValueError),
        ({"timeout": "5"}, TypeError),
        ({"max_queue_size": 0}, ValueError),
        ({"on_error": "log"}, TypeError),
    ],
)
def test_bad_options(options: dict[str, Any], exception: type[Exception]) -> None:
    token = options.pop("token", "gflux_secret_x")
    with pytest.raises(exception):
        Client(token, **options)


def test_token_is_not_in_repr() -> None:
    with Client("gflux_secret_hush", api_host="http://127.0.0.1:1") as client:
        assert "hush" not in repr(client)
        assert "127.0.0.1:1" in repr(client)


def test_signature_matches_the_spec() -> None:
    params = inspect.signature(Client).parameters
    assert [(n, p.default) for n, p in params.items() if n != "token"] == [
        ("api_host", None),
        ("flush_at", 20),
        ("flush_interval", 5.0),
        ("max_retries", 2),
        ("timeout", 5.0),
        ("max_queue_size", 1000),
        ("on_error", None),
    ]
    track = inspect.signature(Client.track).parameters
    assert list(track) == [
        "self",
        "event",
        "anonymous_id",
        "external_id",
        "user_id",
        "properties",
        "timestamp",
        "context",
    ]
    assert all(track[n].kind is inspect.Parameter.KEYWORD_ONLY for n in list(track)[2:])
    identify = inspect.signature(Client.identify).parameters
    assert list(identify) == ["self", "anonymous_id", "external_id", "user_id", "traits"]
    alias = inspect.signature(Client.alias).parameters
    assert list(alias) == ["self", "user_id", "anonymous_id", "previous_id", "request_id"]


def test_batch_body_shape(make_client: MakeClient, ingest: IngestFake) -> None:
    client = make_client()
    client.track("clicked", user_id="p1")
    assert client.flush()
    [request] = ingest.requests
    body = json.loads(request.body)
    assert list(body) == ["events"]
    assert list(body["events"][0])[:2] == ["sent_at", "type"]


def _without_sent_at(body: bytes) -> str:
    events = json.loads(body)["events"]
    return json.dumps([{k: v for k, v in e.items() if k != "sent_at"} for e in events])
