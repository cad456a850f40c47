"""The server against the machine-readable ingest spec (``spec/ingest.json``, issue 9), on
SQLite and PostgreSQL.

Contract: every valid example is accepted (202) alone and in a batch; every invalid example
is a 400 ``validation_error`` alone, and a per-index ``validation_error`` in a batch, whose
detail names what is wrong; the spec's size limits are the server's (413 past them); and the
server's own constants are the spec's (it loads them from the file). The SDK, the browser
script and the test fake are checked against the same file by their own tests.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from flux_testkit import ingest_spec
from flux_testkit.gfserver import GFProject, GFServer, expect_error
from getfluxly_server.domain import ingest

VALID = ingest_spec.valid()
INVALID = ingest_spec.invalid()
LIMITS = ingest_spec.limits()


def _fresh(event: dict[str, Any]) -> dict[str, Any]:
    """A valid example with a message_id of its own (examples are posted more than once,
    and a repeated message_id would be deduplicated, not stored)."""
    return {**event, "message_id": str(uuid.uuid4())} if "message_id" in event else dict(event)


@pytest.fixture
def project(gf_module_server: GFServer) -> GFProject:
    return gf_module_server.create_project("Ingest spec")


def test_the_servers_constants_are_the_specs() -> None:
    assert LIMITS["max_event_bytes"] == ingest.MAX_EVENT_BYTES
    assert LIMITS["max_batch_bytes"] == ingest.MAX_BATCH_BYTES
    assert LIMITS["max_batch_events"] == ingest.MAX_BATCH_EVENTS
    assert LIMITS["max_property_keys"] == ingest.MAX_PROPERTIES
    assert LIMITS["max_depth"] == ingest.MAX_DEPTH
    assert ingest.EVENT_NAME.pattern == ingest_spec.spec()["patterns"]["event_name"]
    # Every rule has at least one invalid example, and every example names a known rule.
    assert {e.rule for e in INVALID} == ingest_spec.rules() - {"size"}


@pytest.mark.parametrize("example", VALID, ids=[e.name for e in VALID])
def test_a_valid_example_is_accepted(
    gf_module_server: GFServer, project: GFProject, example: ingest_spec.Example
) -> None:
    response = gf_module_server.client(project.secret_key).post(
        "/v1/events", json=_fresh(example.event)
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("example", INVALID, ids=[e.name for e in INVALID])
def test_an_invalid_example_is_refused_saying_what(
    gf_module_server: GFServer, project: GFProject, example: ingest_spec.Example
) -> None:
    response = gf_module_server.client(project.secret_key).post("/v1/events", json=example.event)
    detail = expect_error(response, 400, "validation_error")
    assert example.detail is not None
    assert example.detail in detail, detail


def test_all_examples_in_one_batch_are_sorted_by_index(
    gf_module_server: GFServer, project: GFProject
) -> None:
    events = [_fresh(e.event) for e in VALID] + [e.event for e in INVALID]
    response = gf_module_server.client(project.publishable_key).post(
        "/v1/events/batch", json={"events": events}
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (len(VALID), len(INVALID))
    assert [e["index"] for e in answer["errors"]] == list(range(len(VALID), len(events)))
    for error, example in zip(answer["errors"], INVALID, strict=True):
        assert error["error"] == "validation_error"
        assert example.detail is not None
        assert example.detail in error["detail"], (example.name, error)


def _sized(target: int) -> bytes:
    """A one-event body of exactly ``target`` bytes."""
    base = {"event": "sized", "anonymous_id": "anon-1", "properties": {"pad": ""}}
    overhead = len(json.dumps(base, separators=(",", ":")))
    base["properties"] = {"pad": "x" * (target - overhead)}
    body = json.dumps(base, separators=(",", ":")).encode()
    assert len(body) == target
    return body


def test_the_size_limits_are_the_specs(gf_module_server: GFServer, project: GFProject) -> None:
    client = gf_module_server.client(project.secret_key)
    headers = {"Content-Type": "application/json"}
    at_limit = client.post("/v1/events", content=_sized(LIMITS["max_event_bytes"]), headers=headers)
    assert at_limit.status_code == 202, at_limit.text
    over = client.post("/v1/events", content=_sized(LIMITS["max_event_bytes"] + 1), headers=headers)
    expect_error(over, 413, "payload_too_large")

    many = [{"event": "many", "anonymous_id": f"a{i}"} for i in range(LIMITS["max_batch_events"])]
    assert client.post("/v1/events/batch", json={"events": many}).status_code == 202
    too_many = [*many, {"event": "many", "anonymous_id": "one-more"}]
    expect_error(
        client.post("/v1/events/batch", json={"events": too_many}), 413, "payload_too_large"
    )
    big = b'{"events": [' + b" " * LIMITS["max_batch_bytes"] + b"]}"
    expect_error(
        client.post("/v1/events/batch", content=big, headers=headers), 413, "payload_too_large"
    )
