"""Ingest through the real server, on SQLite and on PostgreSQL (spec section 3).

Contract: ``POST /v1/events`` takes one event (≤ 32 KB) and answers 202
``{"accepted": 1, "rejected": 0, "request_id": "req_..."}``; ``POST /v1/events/batch`` takes
``{"events": [...]}`` (≤ 100 events, ≤ 256 KB), stores the good events and reports the bad ones
by index; a replayed ``X-Idempotency-Key`` answers the original response; events dedupe on
``(project, message_id)``; every rule broken is a 400 ``validation_error`` whose detail says
which; a 202 means the events are committed. Project keys only: the publishable key may
ingest and nothing else, ``?api_key=`` works for ingest only.

All tests share one server per backend (``gf_module_server``); each makes its own project and
looks only at that project's rows, read straight from the database.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, expect_error

REQUEST_ID = re.compile(r"^req_[0-9A-Za-z]{8,}$")


# -- helpers -----------------------------------------------------------------------------------


def _event(name: str = "page_viewed", **fields: Any) -> dict[str, Any]:
    """A valid track event with a fresh anonymous id and message_id (``fields`` override)."""
    return {
        "event": name,
        "anonymous_id": f"anon-{uuid.uuid4().hex[:12]}",
        "message_id": str(uuid.uuid4()),
        **fields,
    }


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _padded(target: int, build: Any) -> bytes:
    """The compact JSON of ``build(pad)`` made exactly ``target`` bytes long by sizing the
    ASCII string ``pad``."""
    base = len(_compact(build("")))
    body = _compact(build("x" * (target - base)))
    assert len(body) == target
    return body


def _post_raw(client: httpx.Client, path: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def _json_value(value: Any) -> Any:
    """A JSON column as read by a raw query: text on SQLite, decoded already on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _utc(value: Any) -> datetime:
    """A timestamp column as read by a raw query (text on SQLite, naive or aware) → aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stored(server: GFServer, project: GFProject) -> list[dict[str, Any]]:
    """The project's events table, oldest first."""
    return server.database.query(
        "SELECT * FROM events WHERE project_id = :p ORDER BY id", p=project.id
    )


def _message_ids(server: GFServer, project: GFProject) -> list[str]:
    return [row["message_id"] for row in _stored(server, project)]


@pytest.fixture
def project(gf_module_server: GFServer) -> GFProject:
    """A fresh project on the module's server, so rows can be counted per test."""
    return gf_module_server.create_project("Ingest tests")


@pytest.fixture
def secret(gf_module_server: GFServer, project: GFProject) -> httpx.Client:
    return gf_module_server.client(project.secret_key)


# -- single events -----------------------------------------------------------------------------


def test_a_single_event_is_accepted_with_a_request_id_and_stored_before_the_answer(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    event = _event(
        "signed_up",
        external_id="user-1",
        properties={"plan": "pro", "seats": 3},
        context={"ip": "198.51.100.7"},
        timestamp="2025-03-01T12:00:00+02:00",
    )
    response = secret.post("/v1/events", json=event)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"accepted", "rejected", "request_id"}
    assert (body["accepted"], body["rejected"]) == (1, 0)
    assert REQUEST_ID.match(body["request_id"]), body
    # Every answer has its own request id (support asks for it).
    again = secret.post("/v1/events", json=_event())
    assert again.json()["request_id"] != body["request_id"]

    # Read at once, on another connection: a 202 means committed, not "queued in memory".
    [row] = [
        r for r in _stored(gf_module_server, project) if r["message_id"] == event["message_id"]
    ]
    assert row["type"] == "track"
    assert row["name"] == "signed_up"
    assert (row["anonymous_id"], row["external_id"], row["user_id"]) == (
        event["anonymous_id"],
        "user-1",
        None,
    )
    assert _json_value(row["properties"]) == {"plan": "pro", "seats": 3}
    assert _json_value(row["context"]) == {"ip": "198.51.100.7"}
    assert _utc(row["timestamp"]) == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def test_every_acknowledged_event_is_already_committed(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    """Durability: right after each 202, a separate connection already sees the rows."""
    for round_ in range(6):
        if round_ % 2:
            batch = [_event() for _ in range(5)]
            response = secret.post("/v1/events/batch", json={"events": batch})
        else:
            batch = [_event()]
            response = secret.post("/v1/events", json=batch[0])
        assert response.status_code == 202, response.text
        stored = set(_message_ids(gf_module_server, project))
        assert {e["message_id"] for e in batch} <= stored, f"round {round_}"


# Each broken rule, with words its detail must contain so a developer knows what to change.
INVALID: list[tuple[str, Any, tuple[str, ...]]] = [
    ("camel case name", _event("SignedUp"), ("snake_case",)),
    ("dashed name", _event("signed-up"), ("snake_case",)),
    ("name too long", _event("a" * 65), ("64",)),
    ("missing name", {"anonymous_id": "a1"}, ("event",)),
    ("no id", {"event": "signed_up"}, ("anonymous_id", "external_id")),
    ("empty id", _event(anonymous_id=""), ("anonymous_id",)),
    (
        "33 properties",
        _event(properties={f"p{i}": i for i in range(33)}),
        ("33", "32"),
    ),
    ("properties not an object", _event(properties=["a"]), ("properties",)),
    ("timestamp not ISO-8601", _event(timestamp="yesterday"), ("timestamp", "ISO-8601")),
    ("timestamp a number", _event(timestamp=1700000000), ("timestamp",)),
    ("bad sent_at", _event(timestamp="2025-01-01T00:00:00Z", sent_at="soon"), ("sent_at",)),
    ("unknown field", _event(colour="blue"), ("colour",)),
    ("unknown type", _event(type="page"), ("type",)),
    ("traits on a track event", _event(traits={"plan": "pro"}), ("identify",)),
    ("a list, not an object", [_event()], ("object",)),
    ("a string, not an object", "signed_up", ("object",)),
]


@pytest.mark.parametrize(
    ("payload", "words"), [(p, w) for _, p, w in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_each_broken_rule_is_a_400_that_says_what_is_wrong(
    gf_module_server: GFServer,
    project: GFProject,
    secret: httpx.Client,
    payload: Any,
    words: tuple[str, ...],
) -> None:
    detail = expect_error(secret.post("/v1/events", json=payload), 400, "validation_error")
    for word in words:
        assert word.lower() in detail.lower(), detail
    assert _stored(gf_module_server, project) == []


def test_a_body_that_is_not_json_is_a_400(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    for path in ("/v1/events", "/v1/events/batch"):
        detail = expect_error(_post_raw(secret, path, b"{not json"), 400, "validation_error")
        assert "JSON" in detail
    bad_batches: list[Any] = [{"events": "x"}, {"events": []}, [_event()], {"event": "x"}]
    for bad in bad_batches:
        expect_error(secret.post("/v1/events/batch", json=bad), 400, "validation_error")
    assert _stored(gf_module_server, project) == []


def test_the_limits_themselves_are_allowed(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    """64-character names and 32 properties are inside the rules, not over them."""
    edge = _event("a" * 64, properties={f"p{i}": i for i in range(32)})
    response = secret.post("/v1/events", json=edge)
    assert response.status_code == 202, response.text
    assert _message_ids(gf_module_server, project) == [edge["message_id"]]


# -- size limits ---------------------------------------------------------------------------------


def test_a_single_event_over_32_kb_is_413_and_not_stored(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    ids = {"accepted": str(uuid.uuid4()), "refused": str(uuid.uuid4())}
    # 32 000 bytes is within "32 KB" however KB is read; 32 769 is over it either way.
    fits = _padded(32_000, lambda pad: _event(message_id=ids["accepted"], properties={"p": pad}))
    response = _post_raw(secret, "/v1/events", fits)
    assert response.status_code == 202, response.text

    over = _padded(
        32 * 1024 + 1, lambda pad: _event(message_id=ids["refused"], properties={"p": pad})
    )
    detail = expect_error(_post_raw(secret, "/v1/events", over), 413, "payload_too_large")
    assert "32" in detail

    # Without a Content-Length (chunked upload) the server counts as it reads.
    chunks = iter([over[:20_000], over[20_000:]])
    chunked = secret.post(
        "/v1/events", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    expect_error(chunked, 413, "payload_too_large")
    assert _message_ids(gf_module_server, project) == [ids["accepted"]]


def test_a_batch_over_256_kb_or_100_events_is_413_and_nothing_is_stored(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    def batch(pad: str, marker: str) -> dict[str, Any]:
        # Ten events; the padding goes into the first one's property, each event < 32 KB.
        events = [_event(properties={"k": "y" * 24_000, "m": marker}) for _ in range(10)]
        events[0]["properties"]["p"] = pad
        return {"events": events}

    fits = _padded(256_000, lambda pad: batch(pad, "fits"))
    response = _post_raw(secret, "/v1/events/batch", fits)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 10

    over = _padded(256 * 1024 + 1, lambda pad: batch(pad, "over"))
    detail = expect_error(_post_raw(secret, "/v1/events/batch", over), 413, "payload_too_large")
    assert "256" in detail

    hundred = [_event(properties={"m": "hundred"}) for _ in range(100)]
    response = secret.post("/v1/events/batch", json={"events": hundred})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 100
    too_many = [_event(properties={"m": "too_many"}) for _ in range(101)]
    detail = expect_error(
        secret.post("/v1/events/batch", json={"events": too_many}), 413, "payload_too_large"
    )
    assert "100" in detail

    markers = [_json_value(r["properties"])["m"] for r in _stored(gf_module_server, project)]
    assert sorted(set(markers)) == ["fits", "hundred"]
    assert len(markers) == 110


# -- batches -------------------------------------------------------------------------------------


def test_a_batch_stores_the_good_events_and_reports_the_bad_ones_by_index(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    events: list[Any] = [
        _event("signed_up"),
        _event("Signed Up"),  # 1: bad name
        _event("order_placed", external_id="user-9", properties={"total": 12.5}),
        {"event": "no_ids"},  # 3: no id
        "not an object",  # 4
        _event(type="identify", traits={"plan": "pro"}),  # identify needs no name
        _event(properties={f"p{i}": i for i in range(40)}),  # 6: too many properties
    ]
    response = secret.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"accepted", "rejected", "errors", "request_id"}
    assert (body["accepted"], body["rejected"]) == (3, 4)
    assert REQUEST_ID.match(body["request_id"])
    assert [e["index"] for e in body["errors"]] == [1, 3, 4, 6]
    for error in body["errors"]:
        assert error["error"] == "validation_error"
        assert isinstance(error["detail"], str)
        assert error["detail"]
    assert "snake_case" in body["errors"][0]["detail"]
    assert "40" in body["errors"][3]["detail"]

    rows = _stored(gf_module_server, project)
    assert [r["message_id"] for r in rows] == [events[i]["message_id"] for i in (0, 2, 5)]
    assert [r["type"] for r in rows] == ["track", "track", "identify"]
    assert _json_value(rows[2]["traits"]) == {"plan": "pro"}


def test_an_idempotency_key_replays_the_original_answer_and_stores_nothing_new(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    first_events = [_event(), _event("Bad Name"), _event()]
    first = secret.post(
        "/v1/events/batch", json={"events": first_events}, headers={"X-Idempotency-Key": "k-1"}
    )
    assert first.status_code == 202, first.text
    assert (first.json()["accepted"], first.json()["rejected"]) == (2, 1)
    stored = _message_ids(gf_module_server, project)

    # The same body again (a retry): the answer is the first one, to the byte, and nothing
    # new is stored.
    replay = secret.post(
        "/v1/events/batch", json={"events": first_events}, headers={"X-Idempotency-Key": "k-1"}
    )
    assert replay.status_code == 202
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert _message_ids(gf_module_server, project) == stored

    # A different body under the same key is not a retry: 422 idempotency_key_reused, and
    # none of its events is stored (issue 10, finding 6).
    other = [_event() for _ in range(4)]
    reused = secret.post(
        "/v1/events/batch", json={"events": other}, headers={"X-Idempotency-Key": "k-1"}
    )
    detail = expect_error(reused, 422, "idempotency_key_reused")
    assert "X-Idempotency-Key" in detail
    assert _message_ids(gf_module_server, project) == stored

    # The same body under a new key is a new request.
    fresh = secret.post(
        "/v1/events/batch", json={"events": other}, headers={"X-Idempotency-Key": "k-2"}
    )
    assert fresh.status_code == 202
    assert fresh.json()["request_id"] != first.json()["request_id"]
    assert _message_ids(gf_module_server, project) == stored + [e["message_id"] for e in other]

    # Keys belong to a project: another project's "k-1" is its own request.
    elsewhere = gf_module_server.create_project("Other")
    theirs = gf_module_server.client(elsewhere.secret_key).post(
        "/v1/events/batch", json={"events": [_event()]}, headers={"X-Idempotency-Key": "k-1"}
    )
    assert theirs.status_code == 202
    assert theirs.content != first.content
    assert theirs.json()["accepted"] == 1


def test_publishable_and_server_keys_have_separate_idempotency_keys(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    """A page visitor (who holds the publishable key) cannot pre-claim an idempotency key
    the server integration will use: each kind of key has its own namespace."""
    public = gf_module_server.client(project.publishable_key)
    headers = {"X-Idempotency-Key": "nightly-import-1"}
    claimed = public.post("/v1/events/batch", json={"events": [_event()]}, headers=headers)
    assert claimed.status_code == 202, claimed.text
    server_events = [_event(), _event()]
    own = secret.post("/v1/events/batch", json={"events": server_events}, headers=headers)
    assert own.status_code == 202, own.text
    assert own.json()["accepted"] == 2
    assert own.json()["request_id"] != claimed.json()["request_id"]
    stored = _message_ids(gf_module_server, project)
    assert all(e["message_id"] in stored for e in server_events)
    # Each namespace still replays its own answer.
    again = secret.post("/v1/events/batch", json={"events": server_events}, headers=headers)
    assert again.content == own.content


def _lock_waiters(server: GFServer) -> int:
    """How many sessions of the server's PostgreSQL database wait on a lock now."""
    rows = server.database.query(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int(rows[0]["n"])


def _wait_for_both_attempts_to_block(server: GFServer, timeout: float = 10.0) -> None:
    """Until the two attempts wait on the held lock.

    Ingest commits in groups, so the two attempts may share one transaction (one waiting
    session, the duplicate key resolved inside the group) or have one each (two sessions):
    both are the race under test. So: one waiter is required, a second is waited for briefly.
    """
    deadline = time.monotonic() + timeout
    while _lock_waiters(server) < 1:
        if time.monotonic() > deadline:
            raise AssertionError("no request ever waited on the held lock")
        time.sleep(0.02)
    second = time.monotonic() + 1.0
    while _lock_waiters(server) < 2 and time.monotonic() < second:
        time.sleep(0.02)


def test_a_retry_that_arrives_while_the_original_is_in_flight_gets_the_original_answer(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    """The SDK retries a timed-out batch with the same key while the first attempt may still
    be running on a slow database; both attempts must answer the same thing.

    On PostgreSQL the race is made certain: this test holds an uncommitted row with the
    batch's message_id, so both attempts wait inside their transactions; then it lets go.
    (SQLite takes its write lock at BEGIN, which serialises the attempts by itself.)
    """
    server = gf_module_server
    event = _event()
    body = {"events": [event]}
    headers = {"X-Idempotency-Key": "in-flight"}
    blocker = None
    with server.database.engine() as engine, ThreadPoolExecutor(2) as pool:
        if server.database.backend == "postgres":
            blocker = engine.connect()
            blocker.begin()
            blocker.exec_driver_sql(
                "INSERT INTO events (project_id, message_id, type, properties, traits, context, "
                "timestamp, received_at) VALUES (%(p)s, %(m)s, 'track', '{}', '{}', '{}', "
                "now(), now())",
                {"p": project.id, "m": event["message_id"]},
            )
        attempts = [
            pool.submit(secret.post, "/v1/events/batch", json=body, headers=headers)
            for _ in range(2)
        ]
        if blocker is not None:
            _wait_for_both_attempts_to_block(server)
            blocker.rollback()
            blocker.close()
        first, second = (a.result(timeout=30) for a in attempts)
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert _message_ids(server, project) == [event["message_id"]]
    later = secret.post("/v1/events/batch", json=body, headers=headers)
    assert first.content == second.content == later.content


# -- dedupe and time -----------------------------------------------------------------------------


def test_a_resent_event_is_accepted_but_stored_once(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    original = _event(properties={"attempt": 1})
    resent = {**original, "properties": {"attempt": 2}}
    for event in (original, resent):
        response = secret.post("/v1/events", json=event)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 1
    # In a batch, again and twice over: still one row (the first one).
    twice = secret.post("/v1/events/batch", json={"events": [resent, resent, _event()]})
    assert twice.status_code == 202, twice.text
    assert (twice.json()["accepted"], twice.json()["rejected"]) == (3, 0)

    rows = _stored(gf_module_server, project)
    assert [r["message_id"] for r in rows].count(original["message_id"]) == 1
    assert len(rows) == 2
    [kept] = [r for r in rows if r["message_id"] == original["message_id"]]
    assert _json_value(kept["properties"]) == {"attempt": 1}

    # The same message_id in another project is another event.
    elsewhere = gf_module_server.create_project("Other")
    response = gf_module_server.client(elsewhere.secret_key).post("/v1/events", json=original)
    assert response.status_code == 202
    assert _message_ids(gf_module_server, elsewhere) == [original["message_id"]]


def test_an_event_without_a_timestamp_takes_the_server_receipt_time(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    before = datetime.now(UTC)
    response = secret.post("/v1/events", json=_event())
    after = datetime.now(UTC)
    assert response.status_code == 202
    [row] = _stored(gf_module_server, project)
    # Same machine, same clock: the receipt time lies between our two readings.
    assert before <= _utc(row["received_at"]) <= after
    assert _utc(row["timestamp"]) == _utc(row["received_at"])


def test_sent_at_corrects_a_client_clock_that_is_an_hour_fast(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    real = datetime.now(UTC) - timedelta(minutes=10)  # when it truly happened
    skew = timedelta(hours=1)

    def skewed(moment: datetime) -> str:
        return (moment + skew).isoformat()

    single = _event(timestamp=skewed(real), sent_at=skewed(datetime.now(UTC)))
    assert secret.post("/v1/events", json=single).status_code == 202
    in_batch = _event(timestamp=skewed(real), sent_at=skewed(datetime.now(UTC)))
    assert secret.post("/v1/events/batch", json={"events": [in_batch]}).status_code == 202
    # Without sent_at the server has nothing to correct with and keeps the timestamp.
    trusted = _event(timestamp=skewed(real))
    assert secret.post("/v1/events", json=trusted).status_code == 202

    by_id = {r["message_id"]: _utc(r["timestamp"]) for r in _stored(gf_module_server, project)}
    # The correction is off by the request's latency, which is milliseconds here; a wrong
    # correction would be an hour off.
    for event in (single, in_batch):
        assert abs(by_id[event["message_id"]] - real) < timedelta(seconds=30)
    assert by_id[trusted["message_id"]] == real + skew


# -- keys ----------------------------------------------------------------------------------------


def test_the_api_key_query_parameter_is_accepted_for_ingest_only(
    gf_module_server: GFServer, project: GFProject
) -> None:
    anonymous = gf_module_server.anonymous_client()
    single, batched = _event(), _event()
    for key in (project.secret_key, project.publishable_key):
        params = {"api_key": key}
        response = anonymous.post("/v1/events", json=single, params=params)
        assert response.status_code == 202, response.text
        response = anonymous.post("/v1/events/batch", json={"events": [batched]}, params=params)
        assert response.status_code == 202, response.text
    assert sorted(_message_ids(gf_module_server, project)) == sorted(
        [single["message_id"], batched["message_id"]]
    )
    params = {"api_key": project.secret_key}
    expect_error(
        anonymous.post(
            "/v1/identify/alias", json={"user_id": "x", "anonymous_id": "a"}, params=params
        ),
        401,
        "unauthenticated",
    )
    expect_error(
        anonymous.post("/v1/profiles/prf_x/erase", json={"reason": "internal"}, params=params),
        401,
        "unauthenticated",
    )
    expect_error(anonymous.post("/v1/events", json=_event()), 401, "unauthenticated")
    expect_error(
        anonymous.post("/v1/events", json=_event(), params={"api_key": "gflux_secret_nope"}),
        401,
        "unauthenticated",
    )


def test_publishable_keys_ingest_but_nothing_else_and_workspace_keys_cannot_ingest(
    gf_module_server: GFServer, project: GFProject
) -> None:
    publishable = gf_module_server.client(project.publishable_key)
    event = _event()
    assert publishable.post("/v1/events", json=event).status_code == 202
    assert publishable.post("/v1/events/batch", json={"events": [_event()]}).status_code == 202
    expect_error(
        publishable.post("/v1/identify/alias", json={"user_id": "prf_x", "anonymous_id": "a"}),
        403,
        "wrong_key_type",
    )
    expect_error(
        publishable.post("/v1/profiles/prf_x/erase", json={"reason": "gdpr_dsr"}),
        403,
        "wrong_key_type",
    )

    workspace = gf_module_server.client()
    expect_error(workspace.post("/v1/events", json=_event()), 403, "wrong_key_type")
    expect_error(
        workspace.post("/v1/events/batch", json={"events": [_event()]}), 403, "wrong_key_type"
    )
    assert len(_stored(gf_module_server, project)) == 2


def test_json_the_databases_would_refuse_is_a_400_not_a_500(
    gf_module_server: GFServer, project: GFProject, secret: httpx.Client
) -> None:
    """NaN, Infinity, lone surrogates and integers beyond 64 bits are what Python's json
    accepts and a JSON column (or PostgreSQL) does not: refused at the door, saying why."""
    bodies = (
        b'{"event":"x","anonymous_id":"a","properties":{"n":NaN}}',
        b'{"event":"x","anonymous_id":"a","properties":{"n":-Infinity}}',
        b'{"event":"x","anonymous_id":"a","properties":{"s":"\\ud800"}}',
        b'{"event":"x","anonymous_id":"a","properties":{"n":123456789012345678901234567890}}',
    )
    for body in bodies:
        detail = expect_error(_post_raw(secret, "/v1/events", body), 400, "validation_error")
        assert "not valid JSON" in detail, detail
        batch = b'{"events":[' + body + b"]}"
        expect_error(_post_raw(secret, "/v1/events/batch", batch), 400, "validation_error")
    assert _stored(gf_module_server, project) == []
    # Long digit strings and the 64-bit extremes are fine, and stored exactly.
    exact = {"order": "123456789012345678901234567890", "max": 2**63 - 1, "min": -(2**63)}
    assert secret.post("/v1/events", json=_event(properties=exact)).status_code == 202
    [row] = _stored(gf_module_server, project)
    assert _json_value(row["properties"]) == exact


def test_a_revoked_key_stores_nothing_even_right_after_it_was_used(
    gf_module_server: GFServer,
) -> None:
    """Ingest authenticates keys it has seen from memory; the transaction that stores the
    events checks the key again, so revocation (here through the CLI, another process)
    takes effect on the very next request."""
    project = gf_module_server.create_project("Revoked mid-stream")
    secret = gf_module_server.client(project.secret_key)
    assert secret.post("/v1/events", json=_event()).status_code == 202  # now known
    gf_module_server.cli(
        "key", "revoke", "--workspace", project.workspace_id, project.secret_key_id
    )
    late = _event()
    expect_error(secret.post("/v1/events", json=late), 401, "unauthenticated")
    expect_error(
        secret.post("/v1/events/batch", json={"events": [_event()]}), 401, "unauthenticated"
    )
    assert late["message_id"] not in _message_ids(gf_module_server, project)
    assert len(_stored(gf_module_server, project)) == 1
    # The project's other key is unaffected.
    publishable = gf_module_server.client(project.publishable_key)
    assert publishable.post("/v1/events", json=_event()).status_code == 202


@pytest.fixture(autouse=True)
def _no_server_errors(gf_module_server: GFServer) -> Iterator[None]:
    """No test here may make the server log an unhandled error (a 500 hidden by a retry)."""
    before = gf_module_server.logs().count("unhandled error")
    yield
    assert gf_module_server.logs().count("unhandled error") == before
