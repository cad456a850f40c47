"""Hostile input that used to be a 500, through the real server on SQLite and PostgreSQL
(issue 10, findings 3 and 4).

Contract: an event the server cannot store alike on both databases (a timestamp that leaves
years 1-9999 once moved to UTC or corrected by ``sent_at``, properties nested deeper than
the spec's limit, a NUL in any key or string) is a 400 ``validation_error`` alone and a
per-index ``validation_error`` in a batch whose good events are stored; text PostgreSQL
cannot hold (NUL, lone surrogates) is a 400 in any body and query, and a 404 in a path;
nothing is a 500, and the server logs no traceback.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, expect_error

DEEP = 300


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "event": "page_viewed",
        "anonymous_id": f"anon-{uuid.uuid4().hex[:12]}",
        "message_id": str(uuid.uuid4()),
        **fields,
    }


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


BAD_EVENTS: dict[str, tuple[dict[str, Any], str]] = {
    "first instant, +14:00": ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
    "last instant, -14:00": ({"timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
    "sent_at far in the past": (
        {"timestamp": "9999-12-31T00:00:00Z", "sent_at": "0001-01-02T00:00:00Z"},
        "sent_at",
    ),
    "sent_at far in the future": (
        {"timestamp": "0001-01-02T00:00:00Z", "sent_at": "9999-12-31T00:00:00Z"},
        "sent_at",
    ),
    "properties 300 deep": ({"properties": _nested(DEEP)}, "nests deeper"),
    "context 300 deep": ({"context": _nested(DEEP)}, "nests deeper"),
    "NUL in a property value": ({"properties": {"plan": "pro\x00"}}, "NUL"),
    "NUL in a property key": ({"properties": {"pl\x00an": "pro"}}, "NUL"),
    "NUL in a nested list": ({"properties": {"tags": ["a", {"b": "\x00"}]}}, "NUL"),
    "NUL in context": ({"context": {"page": {"title": "x\x00"}}}, "NUL"),
    "NUL in an id": ({"anonymous_id": "a\x00b"}, "anonymous_id"),
    "NUL in the event name": ({"event": "page\x00viewed"}, "event"),
    "NUL in message_id": ({"message_id": "m\x00"}, "message_id"),
}


@pytest.fixture
def project(gf_module_server: GFServer) -> GFProject:
    return gf_module_server.create_project("Hostile input")


def _rows(server: GFServer, project: GFProject) -> list[str]:
    return [
        r["message_id"]
        for r in server.database.query(
            "SELECT message_id FROM events WHERE project_id = :p", p=project.id
        )
    ]


@pytest.mark.parametrize("case", BAD_EVENTS, ids=list(BAD_EVENTS))
def test_a_bad_event_alone_is_a_400_that_says_what(
    gf_module_server: GFServer, project: GFProject, case: str
) -> None:
    fields, named = BAD_EVENTS[case]
    response = gf_module_server.client(project.publishable_key).post(
        "/v1/events", json=_event(**fields)
    )
    detail = expect_error(response, 400, "validation_error")
    assert named in detail, detail
    assert _rows(gf_module_server, project) == []


def test_bad_events_in_a_batch_are_reported_by_index_and_their_neighbours_stored(
    gf_module_server: GFServer, project: GFProject
) -> None:
    events: list[dict[str, Any]] = []
    bad_at: dict[int, str] = {}
    for fields, named in BAD_EVENTS.values():
        events.append(_event())  # a good neighbour before each bad one
        bad_at[len(events)] = named
        events.append(_event(**fields))
    events.append(_event())
    good = [e["message_id"] for i, e in enumerate(events) if i not in bad_at]
    body = json.dumps({"events": events}).encode()
    assert len(body) < 256 * 1024
    response = gf_module_server.client(project.secret_key).post(
        "/v1/events/batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (len(good), len(bad_at))
    assert [e["index"] for e in answer["errors"]] == sorted(bad_at)
    for error in answer["errors"]:
        assert error["error"] == "validation_error"
        assert bad_at[error["index"]] in error["detail"], error
    assert sorted(_rows(gf_module_server, project)) == sorted(good)


def test_edge_timestamps_that_stay_within_range_are_stored(
    gf_module_server: GFServer, project: GFProject
) -> None:
    events = [
        _event(timestamp="0001-01-01T00:00:00+00:00"),
        _event(timestamp="9999-12-31T23:59:59.999999Z"),
        _event(properties=_nested(32)),
    ]
    response = gf_module_server.client(project.secret_key).post(
        "/v1/events/batch", json={"events": events}
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3, response.text
    assert len(_rows(gf_module_server, project)) == 3


LONE_SURROGATE = '"\\ud800"'


def test_a_lone_surrogate_is_refused_in_every_body(
    gf_module_server: GFServer, project: GFProject
) -> None:
    """Escaped in JSON, a lone surrogate is valid for Python's json module and fails later
    (on encryption, on PostgreSQL): refused as invalid JSON wherever a body comes in."""
    client = gf_module_server.client()
    provider = (
        '{"provider": "smtp", "display_name": "Relay", "from_email": "a@example.com", '
        '"smtp_host": "127.0.0.1", "smtp_port": 2525, "smtp_secure": "none", '
        f'"username": {LONE_SURROGATE}, "password": "x"}}'
    )
    cases = [
        (client, f"/v1/projects/{project.id}/email-providers", provider),
        (client, "/v1/projects", f'{{"name": {LONE_SURROGATE}}}'),
        (
            client,
            f"/v1/projects/{project.id}/keys",
            f'{{"kind": "secret", "name": {LONE_SURROGATE}}}',
        ),
        (
            gf_module_server.client(project.secret_key),
            "/v1/events",
            f'{{"event": "a", "anonymous_id": "x", "properties": {{"p": {LONE_SURROGATE}}}}}',
        ),
    ]
    for http, path, body in cases:
        response = http.post(path, content=body, headers={"Content-Type": "application/json"})
        detail = expect_error(response, 400, "validation_error")
        assert "JSON" in detail, detail


def test_nul_in_other_bodies_is_a_400_on_both_databases(
    gf_module_server: GFServer, project: GFProject
) -> None:
    client = gf_module_server.client()
    cases = [
        (f"/v1/projects/{project.id}/keys", {"kind": "secret", "name": "ci\x00"}),
        ("/v1/keys", {"kind": "workspace", "name": "\x00"}),
        ("/v1/projects", {"name": "a\x00b"}),
        (f"/v1/projects/{project.id}/email-providers", {"provider": "smtp", "x\x00": 1}),
    ]
    server_key = gf_module_server.client(project.secret_key)
    for http, path, body in [
        *((client, path, body) for path, body in cases),
        (server_key, "/v1/identify/alias", {"user_id": "prf_x", "anonymous_id": "a\x00"}),
        (server_key, "/v1/profiles/prf_x/erase", {"reason": "internal", "request_id": "\x00"}),
    ]:
        detail = expect_error(http.post(path, json=body), 400, "validation_error")
        assert "NUL" in detail, detail


@pytest.mark.parametrize(
    "path",
    [
        "/v1/projects/prj_%00",
        "/v1/projects/%00/keys",
        "/v1/email-providers/epr%00x",
        "/v1/projects/prj_x/profiles/prf%00",
        "/v1/projects/%ED%A0%80",  # a lone surrogate, UTF-8-encoded
    ],
)
def test_nul_in_a_path_id_is_404(gf_module_server: GFServer, path: str) -> None:
    expect_error(gf_module_server.client().get(path), 404, "not_found")


def test_nul_in_a_query_parameter_is_400(gf_module_server: GFServer, project: GFProject) -> None:
    client = gf_module_server.client()
    base = f"/v1/projects/{project.id}/profiles"
    for query in ("identity=a%00b", "trait=plan:%00", "limit=1%00", "x%00=1", "trait=%FF"):
        expect_error(client.get(f"{base}?{query}"), 400, "validation_error")
    # The ingest key in the query string too.
    response = gf_module_server.anonymous_client().post(
        "/v1/events?api_key=gflux_pub_%00", json=_event()
    )
    expect_error(response, 400, "validation_error")


def test_a_body_that_fails_to_parse_is_a_validation_error(gf_module_server: GFServer) -> None:
    """Bytes that are not UTF-8 at all: 400 validation_error (was 400 ``server_error``)."""
    client: httpx.Client = gf_module_server.client()
    response = client.post(
        "/v1/projects",
        content=b'{"name": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    expect_error(response, 400, "validation_error")


# -- the engine's management bodies (issue 13's hostile-input pass) ------------------------------


def _template(server: GFServer, project: GFProject) -> str:
    made = server.client().post(
        f"/v1/projects/{project.id}/templates",
        json={"name": f"t-{uuid.uuid4().hex[:8]}", "subject": "Hi", "html": "<p>Hi</p>"},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["template"]["id"])


def _automation(template_id: str, **changes: Any) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": "wait", "type": "delay", "duration": "P1D"},
        {"id": "mail", "type": "send_email", "template_id": template_id},
        {"id": "mark", "type": "update_traits", "traits": {"n": 1}},
        {"id": "call", "type": "webhook", "url": "https://example.com/x", "body": {"n": 1}},
    ]
    body: dict[str, Any] = {"name": f"a-{uuid.uuid4().hex[:8]}",
                            "trigger": {"event": "signed_up"}, "steps": steps}  # fmt: skip
    for path, value in changes.items():
        where: Any = body
        keys = [int(k) if k.isdigit() else k for k in path.split("__")]
        for key in keys[:-1]:
            where = where[key]
        where[keys[-1]] = value
    return body


HUGE = 10**30
#: Automation bodies that were a 500 (found by probing ``getfluxly dev``): a step type that
#: is a list or an object (unhashable in the domain's lookup), a duration beyond what Python
#: can hold, and whole numbers beyond 64 bits (the JSON columns cannot store them).
BAD_AUTOMATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "step type a list": ({"steps__1__type": ["send_email"]}, "steps[1].type"),
    "step type an object": ({"steps__1__type": {"a": 1}}, "steps[1].type"),
    "duration beyond any date": ({"steps__0__duration": "P99999999999999D"}, "too long"),
    "duration of 5000 digits": ({"steps__0__duration": "P" + "9" * 5000 + "D"}, "too long"),
    "reentry beyond any date": ({"reentry": {"after": "P99999999999999D"}}, "too long"),
    "huge number in traits": ({"steps__2__traits": {"n": HUGE}}, "too large"),
    "huge number in a webhook body": ({"steps__3__body": {"n": -HUGE}}, "too large"),
    "huge number in a trigger filter": (
        {
            "trigger": {
                "event": "signed_up",
                "where": [{"property": "n", "op": "eq", "value": HUGE}],
            }
        },
        "too large",
    ),
}


@pytest.mark.parametrize("case", BAD_AUTOMATIONS, ids=list(BAD_AUTOMATIONS))
def test_a_hostile_automation_is_a_400_on_create_and_on_patch(
    gf_module_server: GFServer, project: GFProject, case: str
) -> None:
    changes, said = BAD_AUTOMATIONS[case]
    client = gf_module_server.client()
    template_id = _template(gf_module_server, project)
    created = client.post(f"/v1/projects/{project.id}/automations",
                          json=_automation(template_id, **changes))  # fmt: skip
    assert said in expect_error(created, 400, "validation_error")
    good = client.post(f"/v1/projects/{project.id}/automations", json=_automation(template_id))
    assert good.status_code == 201, good.text
    patched = client.patch(f"/v1/automations/{good.json()['automation']['id']}",
                           json=_automation(template_id, **changes))  # fmt: skip
    assert said in expect_error(patched, 400, "validation_error")
    # The largest whole numbers that fit are kept as they are.
    fits = _automation(template_id, steps__2__traits={"low": -(2**63), "high": 2**64 - 1})
    kept = client.post(f"/v1/projects/{project.id}/automations", json=fits)
    assert kept.status_code == 201, kept.text
    assert kept.json()["automation"]["steps"][2]["traits"] == {"low": -(2**63), "high": 2**64 - 1}


@pytest.mark.parametrize(
    ("send_at", "said"),
    [
        ("0001-01-01T00:00:00+14:00", "years 1 to 9999"),  # year 0 in UTC
        ("9999-12-31T23:59:59-14:00", "years 1 to 9999"),  # year 10000 in UTC
        ("2030-01-01T09:00:00", "timezone"),  # naive
    ],
)
def test_a_broadcast_send_at_beyond_the_calendar_is_a_400(
    gf_module_server: GFServer, project: GFProject, send_at: str, said: str
) -> None:
    client = gf_module_server.client()
    segment = client.post(f"/v1/projects/{project.id}/segments",
                          json={"name": f"s-{uuid.uuid4().hex[:8]}",
                                "rule": {"trait": "plan", "op": "exists"}})  # fmt: skip
    assert segment.status_code == 201, segment.text
    body = {"name": "b", "template_id": _template(gf_module_server, project),
            "segment_id": segment.json()["segment"]["id"]}  # fmt: skip
    refused = client.post(
        f"/v1/projects/{project.id}/broadcasts", json={**body, "send_at": send_at}
    )
    assert said in expect_error(refused, 400, "validation_error")
    draft = client.post(f"/v1/projects/{project.id}/broadcasts", json=body)
    assert draft.status_code == 201, draft.text
    patched = client.patch(f"/v1/broadcasts/{draft.json()['broadcast']['id']}",
                           json={"send_at": send_at})  # fmt: skip
    assert said in expect_error(patched, 400, "validation_error")
    # An offset is read as the moment it names, and answered in UTC.
    offset = client.post(f"/v1/projects/{project.id}/broadcasts",
                         json={**body, "send_at": "2030-01-01T09:00:00+05:30"})  # fmt: skip
    assert offset.status_code == 201, offset.text
    assert offset.json()["broadcast"]["send_at"] == "2030-01-01T03:30:00Z"


@pytest.mark.parametrize("depth", [513, 1000, 1023])
def test_a_management_body_nested_too_deep_is_a_400(
    gf_module_server: GFServer, project: GFProject, depth: int
) -> None:
    """Up to orjson's own limit (1024) a deep body used to reach Python's recursion limit
    in the NUL check: a 500."""
    body = '{"rule": ' + '{"not": ' * (depth - 1) + "1" + "}" * depth
    for path in (f"/v1/projects/{project.id}/segments/preview",
                 f"/v1/projects/{project.id}/subscription-groups"):  # fmt: skip
        response = gf_module_server.client().request(
            "PUT" if path.endswith("groups") else "POST", path, content=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert "nests deeper" in expect_error(response, 400, "validation_error")


def test_none_of_it_left_a_traceback_in_the_logs(gf_module_server: GFServer) -> None:
    """Runs last in this module (pytest keeps file order): every case above was answered
    without an unexpected error."""
    logs = gf_module_server.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert "unhandled error" not in logs
