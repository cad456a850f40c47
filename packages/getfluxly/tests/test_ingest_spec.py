"""The SDK's client-side validation against the machine-readable ingest spec
(``getfluxly_server/spec/ingest.json``, issue 9): same limits and pattern, every valid example
accepted, every invalid example it can express refused with ``validation_error``.

Some rules cannot be broken through the SDK's API at all (it sets ``type`` and
``message_id`` itself, takes ``traits`` only on identify and has no way to send an unknown
field); those rules are listed in :data:`NOT_EXPRESSIBLE`, and the test checks that exactly
their examples were the ones left out, so a new rule in the spec fails here until the SDK
either checks it or is shown unable to break it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from flux_testkit import ingest_spec
from getfluxly import GFluxError, events

NOT_EXPRESSIBLE = {"type", "traits", "message_id", "unknown_field"}
TRACK_ARGS = {
    "event",
    "anonymous_id",
    "external_id",
    "user_id",
    "properties",
    "timestamp",
    "context",
}
IDENTIFY_ARGS = {"anonymous_id", "external_id", "user_id", "traits"}


def _build(event: dict[str, Any], *, own_message_id: bool = False) -> events.EncodedEvent | None:
    """The example built through the SDK's API, or None when its API cannot express it.
    ``own_message_id``: let the SDK make the message_id (which the API cannot take)."""
    fields = dict(event)
    if own_message_id:
        fields.pop("message_id", None)
    kind = fields.pop("type", "track")
    if kind == "track" and set(fields) <= TRACK_ARGS:
        name = fields.pop("event", None)
        return events.build_track(name, **fields)
    if kind == "identify" and set(fields) <= IDENTIFY_ARGS:
        return events.build_identify(**fields)
    return None


def test_the_sdks_limits_are_the_specs() -> None:
    limits = ingest_spec.limits()
    assert limits["max_event_name_length"] == events.MAX_EVENT_NAME_LENGTH
    assert limits["max_property_keys"] == events.MAX_PROPERTY_KEYS
    assert limits["max_id_length"] == events.MAX_ID_LENGTH
    assert limits["max_depth"] == events.MAX_DEPTH
    # The SDK reads "32 KB" as the smaller 32,000 bytes (refusing early beats losing later).
    assert limits["max_event_bytes"] >= events.MAX_EVENT_BYTES
    pattern = ingest_spec.spec()["patterns"]["event_name"]
    assert re.compile(pattern.strip("^$")).pattern == events._SNAKE_CASE.pattern.replace("?:", "")


@pytest.mark.parametrize("example", ingest_spec.valid(), ids=lambda e: e.name)
def test_a_valid_example_is_accepted(example: ingest_spec.Example) -> None:
    built = _build(example.event, own_message_id=True)
    assert built is not None, "every valid example can be sent through the SDK"
    assert built.message_id


def test_every_expressible_invalid_example_is_refused() -> None:
    left_out, codes = set(), {}
    for example in ingest_spec.invalid():
        try:
            built = _build(example.event)
        except GFluxError as exc:
            codes[example.name] = exc.code
            continue
        assert built is None, f"the SDK accepted {example.name!r} ({example.rule})"
        left_out.add(example.rule)
    assert set(codes.values()) == {"validation_error"}, codes
    assert left_out == NOT_EXPRESSIBLE
