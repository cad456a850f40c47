"""Client-side event building and validation (getfluxly.events), without a server."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest

from getfluxly import GFluxError, __version__
from getfluxly.events import (
    MAX_EVENT_BYTES,
    SENT_AT_OVERHEAD,
    build_identify,
    build_track,
    format_sent_at,
    stamp_sent_at,
)


def test_track_payload() -> None:
    when = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    event = build_track(
        "signed_up",
        external_id="user_42",
        anonymous_id="anon-1",
        properties={"plan": "pro", "seats": 3},
        timestamp=when,
        context={"ip": "203.0.113.9"},
    )
    data = event.as_dict()
    assert data == {
        "type": "track",
        "event": "signed_up",
        "message_id": event.message_id,
        "timestamp": "2025-01-31T09:30:00.000000+02:00",
        "anonymous_id": "anon-1",
        "external_id": "user_42",
        "properties": {"plan": "pro", "seats": 3},
        "context": {
            "library": {"name": "getfluxly-python", "version": __version__},
            "ip": "203.0.113.9",
        },
    }
    assert uuid.UUID(event.message_id).version == 4


def test_each_event_gets_its_own_message_id() -> None:
    ids = {build_track("opened", user_id="p1").message_id for _ in range(100)}
    assert len(ids) == 100


def test_default_timestamp_is_now_in_utc() -> None:
    before = dt.datetime.now(dt.UTC)
    stamp = dt.datetime.fromisoformat(build_track("x", user_id="p").as_dict()["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert before <= stamp <= dt.datetime.now(dt.UTC)


def test_identify_payload() -> None:
    event = build_identify(external_id="user_42", traits={"email": "ada@example.com"})
    data = event.as_dict()
    assert data["type"] == "identify"
    assert "event" not in data
    assert data["traits"] == {"email": "ada@example.com"}
    assert data["external_id"] == "user_42"
    assert build_identify(anonymous_id="a").as_dict()["traits"] == {}


def test_integer_ids_are_sent_as_strings() -> None:
    assert build_track("x", external_id=42).as_dict()["external_id"] == "42"


def test_json_conversions() -> None:
    event = build_track(
        "ordered",
        user_id="p",
        properties={
            "at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            "day": dt.date(2025, 1, 2),
            "id": uuid.UUID(int=1),
            "total": Decimal("9.5"),
            "tags": ("a", "b"),
            "name": "Zoë",
        },
    )
    assert event.as_dict()["properties"] == {
        "at": "2025-01-01T00:00:00+00:00",
        "day": "2025-01-02",
        "id": "00000000-0000-0000-0000-000000000001",
        "total": 9.5,
        "tags": ["a", "b"],
        "name": "Zoë",
    }


def test_event_is_a_snapshot() -> None:
    properties: dict[str, Any] = {"items": [1]}
    event = build_track("x", user_id="p", properties=properties)
    properties["items"].append(2)
    properties["late"] = True
    assert event.as_dict()["properties"] == {"items": [1]}


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("SignedUp", "did you mean 'signed_up'"),
        ("signed-up", "did you mean 'signed_up'"),
        ("signed up", "not snake_case"),
        ("signed__up", "not snake_case"),
        ("_signed_up", "not snake_case"),
        ("1st_login", "not snake_case"),
        ("", "not snake_case"),
        ("a" * 65, "65 characters long; the limit is 64"),
        (42, "must be a string"),
    ],
)
def test_bad_event_names(name: Any, fragment: str) -> None:
    with pytest.raises(GFluxError) as caught:
        build_track(name, user_id="p")
    assert caught.value.code == "validation_error"
    assert fragment in caught.value.message
    assert not caught.value.retryable


def test_longest_name_is_fine() -> None:
    assert build_track("a" * 64, user_id="p").as_dict()["event"] == "a" * 64


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "at least one of anonymous_id, external_id, user_id"),
        ({"user_id": ""}, "user_id must not be empty"),
        ({"user_id": "  "}, "user_id must not be empty"),
        ({"external_id": 1.5}, "external_id must be a string"),
        ({"user_id": True}, "user_id must be a string"),
        ({"user_id": "p", "properties": {str(i): i for i in range(33)}}, "33 keys; the limit"),
        ({"user_id": "p", "properties": [("a", 1)]}, "properties must be a mapping"),
        ({"user_id": "p", "properties": {1: "x"}}, "keys must be strings"),
        ({"user_id": "p", "properties": {"s": {1, 2}}}, "set is not JSON serializable"),
        ({"user_id": "p", "properties": {"n": math.nan}}, "NaN"),
        ({"user_id": "p", "properties": {"o": object()}}, "object is not JSON serializable"),
        ({"user_id": "p", "context": "web"}, "context must be a mapping"),
        ({"user_id": "p", "timestamp": dt.datetime(2025, 1, 1)}, "has no timezone"),
        ({"user_id": "p", "timestamp": "2025-01-01T10:00:00"}, "has no timezone"),
        ({"user_id": "p", "timestamp": "yesterday"}, "is not ISO-8601"),
        ({"user_id": "p", "timestamp": 1735689600}, "timezone-aware datetime"),
        ({"user_id": "p", "properties": {"blob": "x" * MAX_EVENT_BYTES}}, "bytes as JSON"),
    ],
)
def test_invalid_track_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(GFluxError) as caught:
        build_track("clicked", **kwargs)
    assert caught.value.code == "validation_error"
    assert fragment in caught.value.message


def test_32_property_keys_are_fine() -> None:
    """The limit is 32 keys: 32 are kept, every one of them (33 are refused, above)."""
    properties = {str(i): i for i in range(32)}
    event = build_track("x", user_id="p", properties=properties)
    assert event.as_dict()["properties"] == properties
    assert json.loads(event.data)["properties"] == properties


def test_string_timestamps_are_normalised() -> None:
    event = build_track("x", user_id="p", timestamp="2025-01-31T09:30:00Z")
    assert event.as_dict()["timestamp"] == "2025-01-31T09:30:00.000000+00:00"


def test_size_limit_counts_sent_at() -> None:
    # Find the largest padding that fits, then check one more byte does not.
    base = len(build_track("x", user_id="p", properties={"p": ""}).data) + SENT_AT_OVERHEAD
    fits = "x" * (MAX_EVENT_BYTES - base)
    assert build_track("x", user_id="p", properties={"p": fits}).size == MAX_EVENT_BYTES
    with pytest.raises(GFluxError, match="limit is 32000"):
        build_track("x", user_id="p", properties={"p": fits + "x"})


def test_sent_at_stamp() -> None:
    event = build_track("x", user_id="p")
    sent_at = format_sent_at(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))
    assert sent_at == "2025-01-01T12:00:00.000000Z"
    stamped = stamp_sent_at(event.data, sent_at)
    assert len(stamped) == event.size
    assert json.loads(stamped) == {"sent_at": sent_at, **event.as_dict()}
    with pytest.raises(ValueError, match="format_sent_at"):
        stamp_sent_at(event.data, "2025-01-01")
