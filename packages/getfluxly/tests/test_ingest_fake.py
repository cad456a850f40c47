"""The ingest fake speaks the spec (§3), checked with plain HTTP, not with the SDK."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flux_testkit import ingest_spec
from flux_testkit.ingest_fake import ALIAS_PATH, BATCH_PATH, EVENTS_PATH, IngestFake


@pytest.fixture
def http(ingest: IngestFake) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=ingest.url, headers={"Authorization": f"Bearer {ingest.secret_key}"}
    ) as client:
        yield client


def _event(**fields: Any) -> dict[str, Any]:
    return {"event": "signed_up", "external_id": "u1", "message_id": str(uuid.uuid4()), **fields}


def test_single_event(http: httpx.Client, ingest: IngestFake) -> None:
    answer = http.post(EVENTS_PATH, json=_event(properties={"plan": "pro"}))
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (1, 0)
    assert body["request_id"].startswith("req_")
    assert ingest.events[0]["properties"] == {"plan": "pro"}
    assert "x-ratelimit-limit" in answer.headers
    assert "x-ratelimit-remaining" in answer.headers
    assert "x-ratelimit-reset" in answer.headers


def test_single_event_errors(http: httpx.Client) -> None:
    answer = http.post(EVENTS_PATH, json=_event(event="SignedUp"))
    assert answer.status_code == 400
    assert answer.json()["error"] == "validation_error"
    assert "snake_case" in answer.json()["detail"]
    big = http.post(EVENTS_PATH, json=_event(properties={"b": "x" * 33_000}))
    assert (big.status_code, big.json()["error"]) == (413, "payload_too_large")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer gflux_secret_nope"}])
def test_unauthenticated(ingest: IngestFake, headers: dict[str, str]) -> None:
    answer = httpx.post(ingest.url + BATCH_PATH, json={"events": [_event()]}, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_api_key_query_is_for_ingest_only(ingest: IngestFake) -> None:
    query = {"api_key": ingest.secret_key}
    assert httpx.post(ingest.url + EVENTS_PATH, params=query, json=_event()).status_code == 202
    alias = {"user_id": "p", "anonymous_id": "a"}
    assert httpx.post(ingest.url + ALIAS_PATH, params=query, json=alias).status_code == 401


def test_batch_with_invalid_events(http: httpx.Client, ingest: IngestFake) -> None:
    events = [
        _event(),
        _event(external_id=None),
        {"type": "identify", "anonymous_id": "a", "traits": {"plan": "pro"}},
        _event(properties={str(i): i for i in range(33)}),
        _event(timestamp="last tuesday"),
        _event(colour="red"),
        _event(message_id="not-a-uuid"),
        _event(type="page"),
    ]
    events[1].pop("external_id")
    answer = http.post(BATCH_PATH, json={"events": events}, headers={"X-Idempotency-Key": "k1"})
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 6)
    assert [e["index"] for e in body["errors"]] == [1, 3, 4, 5, 6, 7]
    assert {e["error"] for e in body["errors"]} == {"validation_error"}
    assert "one of anonymous_id" in body["errors"][0]["detail"]
    assert "unknown fields: colour" in body["errors"][3]["detail"]
    assert [e.get("type", "track") for e in ingest.events] == ["track", "identify"]


def test_batch_limits(http: httpx.Client) -> None:
    too_many = http.post(BATCH_PATH, json={"events": [_event() for _ in range(101)]})
    assert (too_many.status_code, too_many.json()["error"]) == (413, "payload_too_large")
    blob = "x" * 30_000
    too_big = http.post(
        BATCH_PATH, json={"events": [_event(properties={"b": blob}) for _ in range(9)]}
    )
    assert (too_big.status_code, too_big.json()["error"]) == (413, "payload_too_large")
    assert http.post(BATCH_PATH, json={"events": [_event() for _ in range(100)]}).status_code == 202
    empty = http.post(BATCH_PATH, json={"events": []})
    assert (empty.status_code, empty.json()["error"]) == (400, "validation_error")
    wrong = http.post(BATCH_PATH, content=b"not json")
    assert wrong.status_code == 400


def test_idempotent_replay(http: httpx.Client, ingest: IngestFake) -> None:
    batch = {"events": [_event(), _event()]}
    first = http.post(BATCH_PATH, json=batch, headers={"X-Idempotency-Key": "same"})
    again = http.post(BATCH_PATH, json=batch, headers={"X-Idempotency-Key": "same"})
    assert again.status_code == first.status_code == 202
    assert again.content == first.content  # the original answer, request_id included
    assert len(ingest.events) == 2
    assert ingest.replays == 1
    assert ingest.duplicates == 0


def test_message_id_dedupe_across_keys(http: httpx.Client, ingest: IngestFake) -> None:
    event = _event()
    for key in ("k1", "k2"):
        answer = http.post(BATCH_PATH, json={"events": [event]}, headers={"X-Idempotency-Key": key})
        assert answer.json()["accepted"] == 1  # acknowledged...
    assert len(ingest.events) == 1  # ...but stored once
    assert ingest.duplicates == 1


def test_alias(http: httpx.Client, ingest: IngestFake) -> None:
    answer = http.post(ALIAS_PATH, json={"user_id": "prof_1", "anonymous_id": "a1"})
    assert answer.status_code == 200
    assert answer.json()["alias"]["user_id"] == "prof_1"
    assert answer.json()["alias"]["merged_at"]
    again = http.post(ALIAS_PATH, json={"user_id": "prof_1", "anonymous_id": "a1"})
    assert again.status_code == 200  # the same alias twice is fine
    conflict = http.post(ALIAS_PATH, json={"user_id": "prof_2", "anonymous_id": "a1"})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "alias_conflict"
    missing = http.post(ALIAS_PATH, json={"user_id": "prof_2"})
    assert (missing.status_code, missing.json()["error"]) == (400, "validation_error")
    public = httpx.post(
        ingest.url + ALIAS_PATH,
        json={"user_id": "p", "anonymous_id": "b"},
        headers={"Authorization": f"Bearer {ingest.publishable_key}"},
    )
    assert (public.status_code, public.json()["error"]) == (403, "wrong_key_type")


def test_routes(http: httpx.Client) -> None:
    assert http.post("/v1/nope", json={}).json()["error"] == "not_found"
    wrong = http.get(BATCH_PATH)
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


def test_scripted_failures(http: httpx.Client, ingest: IngestFake) -> None:
    ingest.fail_next(429, retry_after=3)
    ingest.fail_next(code="too_early")
    ingest.fail_next(503, body=b"<html>down</html>")
    limited = http.post(BATCH_PATH, json={"events": [_event()]})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert limited.json() == {"error": "rate_limited", "detail": "scripted 429 rate_limited"}
    assert http.post(BATCH_PATH, json={"events": [_event()]}).status_code == 425
    assert http.post(BATCH_PATH, json={"events": [_event()]}).content == b"<html>down</html>"
    assert http.post(BATCH_PATH, json={"events": [_event()]}).status_code == 202
    assert len(ingest.events) == 1


def test_scripted_failure_after_processing(http: httpx.Client, ingest: IngestFake) -> None:
    ingest.fail_next(503, after_processing=True)
    answer = http.post(BATCH_PATH, json={"events": [_event()]}, headers={"X-Idempotency-Key": "k"})
    assert answer.status_code == 503
    assert len(ingest.events) == 1  # stored although the client heard 503


def test_scripted_reset_and_slow(http: httpx.Client, ingest: IngestFake) -> None:
    ingest.reset_next()
    with pytest.raises(httpx.TransportError):
        http.post(BATCH_PATH, json={"events": [_event()]})
    assert ingest.events == []
    ingest.slow_next(2.0)
    with pytest.raises(httpx.ReadTimeout):
        http.post(BATCH_PATH, json={"events": [_event()]}, timeout=0.2)


def test_scripts_by_path(http: httpx.Client, ingest: IngestFake) -> None:
    ingest.fail_next(503, path=ALIAS_PATH)
    assert http.post(BATCH_PATH, json={"events": [_event()]}).status_code == 202
    assert http.post(ALIAS_PATH, json={"user_id": "p", "anonymous_id": "a"}).status_code == 503


def test_rate_limit() -> None:
    with IngestFake(rate_limit=2, rate_window=60) as fake:
        headers = {"Authorization": f"Bearer {fake.secret_key}"}
        url = fake.url + EVENTS_PATH
        answers = [httpx.post(url, json=_event(), headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[1].headers["x-ratelimit-remaining"] == "0"
    assert answers[2].json()["error"] == "rate_limited"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60


def test_events_record_received_at(http: httpx.Client, ingest: IngestFake) -> None:
    http.post(EVENTS_PATH, content=json.dumps(_event()).encode())
    assert ingest.events[0]["received_at"]
    assert ingest.wait_for_events(1, timeout=1)
    assert not ingest.wait_for_events(2, timeout=0.05)


# -- the machine-readable ingest spec (issue 9) --------------------------------------------------


def test_the_fakes_limits_are_the_specs() -> None:
    limits = ingest_spec.limits()
    fake = IngestFake()
    assert (fake.max_event_bytes, fake.max_batch_bytes, fake.max_batch_events) == (
        limits["max_event_bytes"],
        limits["max_batch_bytes"],
        limits["max_batch_events"],
    )
    assert fake.max_property_keys == limits["max_property_keys"]


def test_the_fake_sorts_the_specs_examples_as_the_server_does(
    http: httpx.Client, ingest: IngestFake
) -> None:
    """Over HTTP, in one batch: every valid example stored, every invalid one reported at
    its index (the fake refuses each for a reason of its own wording)."""
    valid, invalid = ingest_spec.valid(), ingest_spec.invalid()
    events = [e.event for e in valid] + [e.event for e in invalid]
    response = http.post(BATCH_PATH, json={"events": events})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [e["index"] for e in answer["errors"]] == list(range(len(valid), len(events))), [
        (invalid[e["index"] - len(valid)].name if e["index"] >= len(valid) else "valid!", e)
        for e in answer["errors"]
    ]
    assert answer["accepted"] == len(valid)
    assert len(ingest.events) == len(valid)
