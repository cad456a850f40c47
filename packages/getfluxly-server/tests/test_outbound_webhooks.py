"""Outbound webhooks through the real server, on SQLite and PostgreSQL (engine spec section 7,
"Outbound").

Contract: ``POST /v1/projects/{project_id}/webhooks`` ``{"url", "events"}`` -> 201 with the
endpoint and its secret ``whsec_<base64>`` (this once); list, get, PATCH, DELETE; unknown
event types and bad URLs are 400 naming the field. Every event ``record()`` writes reaches
the endpoints subscribed to its type, POSTed with Standard Webhooks headers (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``),
retried with backoff until a 2xx, every attempt in ``GET /v1/webhooks/{id}/deliveries``.
Under the multi-tenant guard a private address is refused as a refused connection.

Events are recorded the way every feedback source records them (``domain.feedback.record``),
in this process, on the server's database; the server's own worker sends them to a local
HTTP receiver that checks nothing itself: the tests verify the signatures.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, Harness, expect_error
from flux_testkit.httpfake import Reply
from flux_testkit.outbound import Receiver, verify_signature
from flux_testkit.webhook_signers import standard_headers
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import MessageEventType

#: Retries within a fraction of a second, so a test sees several attempts.
FAST_RETRIES = {
    "GETFLUXLY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
    "GETFLUXLY_WEBHOOK_BACKOFF_CAP_SECONDS": "0.2",
}
EVENT_TYPES = [
    "message.delivered", "message.deferred", "message.bounced", "message.complained",
    "message.opened", "message.clicked", "message.unsubscribed",
]  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GFServer]:
    """One ``serve`` per backend for the module, retrying webhooks fast."""
    directory = tmp_path_factory.mktemp(f"outbound-{request.param}")
    database = gf_harness.database(request.param, directory / "db")
    running = GFServer(gf_harness, database, directory / "logs", env=FAST_RETRIES)
    try:
        yield running.start()
    finally:
        running.close()
        database.close()


@pytest.fixture
def project(server: GFServer) -> GFProject:
    return server.create_project("Webhooks")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def _create(server: GFServer, project_id: str, url: str, events: list[str]) -> dict[str, Any]:
    response = server.client().post(
        f"/v1/projects/{project_id}/webhooks", json={"url": url, "events": events}
    )
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()["webhook"]
    return webhook


def _record(server: GFServer, project_id: str, *events: FeedbackEvent) -> None:
    db = Database(server.database.sqlalchemy_url)
    try:
        with db.transaction() as session:
            written = record(session, project_id, list(events))
        assert len(written) == len(events)
    finally:
        db.dispose()


def _bounce(email: str, event_id: str) -> FeedbackEvent:
    return FeedbackEvent(
        type=MessageEventType.BOUNCED, email=email, source="smtp",
        occurred_at=datetime(2026, 12, 3, 6, 0, tzinfo=UTC), provider_event_id=event_id,
        bounce_type="hard", reason="550 5.1.1 User unknown",
    )  # fmt: skip


def _deliveries(server: GFServer, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    response = server.client().get(f"/v1/webhooks/{webhook_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def _wait_deliveries(
    server: GFServer, webhook_id: str, done: Any, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The delivery log once ``done(log)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        log = _deliveries(server, webhook_id)
        if done(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"the delivery log did not get there in {timeout}s: {log}")
        time.sleep(0.05)


def test_an_endpoint_is_created_listed_changed_and_deleted(
    server: GFServer, project: GFProject
) -> None:
    owner = server.client()
    made = _create(server, project.id, "https://hooks.example.com/getfluxly", ["message.bounced"])
    secret = made.pop("secret")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert made["id"].startswith("wh_")
    assert (made["project_id"], made["url"], made["events"]) == (
        project.id, "https://hooks.example.com/getfluxly", ["message.bounced"],
    )  # fmt: skip
    assert made["created_at"].endswith("Z")

    # The secret is never shown again, nor stored in plain text.
    listed = owner.get(f"/v1/projects/{project.id}/webhooks")
    assert listed.status_code == 200
    assert listed.json() == {"webhooks": [made]}
    assert owner.get(f"/v1/webhooks/{made['id']}").json() == {"webhook": made}
    stored = server.database.query("SELECT secret FROM outbound_webhooks")
    assert stored
    assert all(secret not in str(row) for row in stored)
    assert secret.removeprefix("whsec_") not in server.logs()

    changed = owner.patch(
        f"/v1/webhooks/{made['id']}",
        json={"events": ["message.complained", "message.bounced", "message.complained"]},
    )
    assert changed.status_code == 200, changed.text
    view = changed.json()["webhook"]
    assert view["events"] == ["message.complained", "message.bounced"]
    assert view["url"] == made["url"]
    assert "secret" not in view

    assert owner.delete(f"/v1/webhooks/{made['id']}").status_code == 204
    expect_error(owner.get(f"/v1/webhooks/{made['id']}"), 404, "not_found")
    expect_error(owner.delete(f"/v1/webhooks/{made['id']}"), 404, "not_found")
    assert owner.get(f"/v1/projects/{project.id}/webhooks").json() == {"webhooks": []}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "https://a.example/h", "events": ["message.bounce"]}, "events", "message.bounced"),
        ({"url": "https://a.example/h", "events": ["bounced"]}, "events", "events[0]"),
        ({"url": "https://a.example/h", "events": []}, "events", "non-empty"),
        ({"url": "https://a.example/h", "events": "message.bounced"}, "events", "list"),
        ({"url": "https://a.example/h"}, "events", "required"),
        ({"url": "ftp://a.example/h", "events": ["message.bounced"]}, "url", "https://"),
        ({"url": "https://user:pw@a.example/h", "events": ["message.bounced"]}, "url", "user"),
        ({"url": "https://a.example/h#x", "events": ["message.bounced"]}, "url", "fragment"),
        ({"url": "not a url", "events": ["message.bounced"]}, "url", "https://"),
        ({"url": "", "events": ["message.bounced"]}, "url", "required"),
        ({"url": "https://a.example/" + "x" * 2100, "events": ["message.bounced"]}, "url", "2048"),
        ({"events": ["message.bounced"]}, "url", "required"),
        ({"url": "https://a.example/h", "events": ["message.bounced"], "x": 1}, "x", "field"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    server: GFServer, project: GFProject, body: dict[str, Any], field: str, says: str
) -> None:
    response = server.client().post(f"/v1/projects/{project.id}/webhooks", json=body)
    detail = expect_error(response, 400, "validation_error")
    assert response.json()["field"] == field, response.text
    assert says in detail, detail
    assert server.client().get(f"/v1/projects/{project.id}/webhooks").json() == {"webhooks": []}


def test_every_recorded_type_is_an_event_type(server: GFServer, project: GFProject) -> None:
    made = _create(server, project.id, "https://hooks.example.com/all", EVENT_TYPES)
    assert made["events"] == EVENT_TYPES
    bad = server.client().patch(f"/v1/webhooks/{made['id']}", json={"events": ["message.sent"]})
    assert expect_error(bad, 400, "validation_error")
    assert bad.json()["field"] == "events"


def test_a_recorded_bounce_is_delivered_signed(
    server: GFServer, project: GFProject, receiver: Receiver
) -> None:
    bounces = _create(server, project.id, f"{receiver.url}/bounces", ["message.bounced"])
    # Another endpoint of the project, for complaints only: it hears nothing of a bounce.
    complaints = _create(server, project.id, f"{receiver.url}/complaints", ["message.complained"])
    _record(server, project.id, _bounce("Ada@Example.com", "evt-1"))

    [delivery] = _wait_deliveries(
        server, bounces["id"], lambda log: log and log[0]["status"] != "pending"
    )
    assert delivery["status"] == "succeeded"
    assert delivery["event_type"] == "message.bounced"
    [attempt] = delivery["attempts"]
    assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 200, None)
    assert attempt["response_excerpt"] == "thanks"

    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/bounces")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == delivery["id"]
    verify_signature(bounces["secret"], request)
    with pytest.raises(AssertionError):  # the other endpoint's secret does not verify it
        verify_signature(complaints["secret"], request)
    assert request.json == {
        "type": "message.bounced",
        "timestamp": "2026-12-03T06:00:00Z",
        "data": {
            "project_id": project.id, "message_id": None, "profile_id": None,
            "email": "ada@example.com", "source": "smtp", "bounce_type": "hard",
            "reason": "550 5.1.1 User unknown", "url": None, "machine": False,
            "occurred_at": "2026-12-03T06:00:00Z",
        },
    }  # fmt: skip
    assert _deliveries(server, complaints["id"]) == []

    # A replayed report writes no row, so nothing is sent again.
    _record_replay = Database(server.database.sqlalchemy_url)
    try:
        with _record_replay.transaction() as session:
            assert record(session, project.id, [_bounce("ada@example.com", "evt-1")]) == []
    finally:
        _record_replay.dispose()
    time.sleep(0.5)
    assert len(receiver.requests) == 1


def test_a_failing_endpoint_is_retried_and_every_attempt_logged(
    server: GFServer, project: GFProject
) -> None:
    long_answer = b"<html>" + b"internal error " * 400 + b"</html>"
    with Receiver(Reply(500, long_answer), Reply(503, b"busy"), Reply(204)) as flaky:
        made = _create(server, project.id, f"{flaky.url}/hook", ["message.bounced"])
        _record(server, project.id, _bounce("bob@example.com", "evt-2"))
        [delivery] = _wait_deliveries(
            server, made["id"], lambda log: log and log[0]["status"] == "succeeded"
        )
        requests = list(flaky.requests)
    attempts = delivery["attempts"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 204, None),
    ]  # fmt: skip
    # Only a short, printable excerpt of an answer is kept.
    excerpt = attempts[0]["response_excerpt"]
    assert excerpt.startswith("<html>internal error")
    assert len(excerpt) <= 200
    assert attempts[2]["response_excerpt"] is None
    # One message id across attempts; each attempt signed afresh, each signature valid.
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {delivery["id"]}
    for request in requests:
        verify_signature(made["secret"], request)
    # The log never shows the secret.
    log = server.client().get(f"/v1/webhooks/{made['id']}/deliveries").text
    assert made["secret"] not in log
    assert made["secret"].removeprefix("whsec_") not in log
    assert _deliveries(server, made["id"], status="pending") == []
    assert len(_deliveries(server, made["id"], status="succeeded")) == 1


def test_the_delivery_log_pages_newest_first(server: GFServer, project: GFProject) -> None:
    with Receiver() as endpoint:
        made = _create(server, project.id, endpoint.url, ["message.bounced"])
        _record(server, project.id, *(_bounce(f"p{i}@example.com", f"page-{i}") for i in range(5)))
        _wait_deliveries(
            server, made["id"], lambda log: len(log) == 5 and all(
                d["status"] == "succeeded" for d in log
            ),
        )  # fmt: skip
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = server.client().get(f"/v1/webhooks/{made['id']}/deliveries", params=params)
        assert page.status_code == 200, page.text
        seen += [d["id"] for d in page.json()["deliveries"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    everything = [d["id"] for d in _deliveries(server, made["id"])]
    assert seen == everything
    bad = server.client().get(f"/v1/webhooks/{made['id']}/deliveries", params={"cursor": "x"})
    assert expect_error(bad, 400, "validation_error")


def test_deleting_an_endpoint_stops_its_deliveries(server: GFServer, project: GFProject) -> None:
    with Receiver(*[Reply(500)] * 50) as failing:
        made = _create(server, project.id, failing.url, ["message.bounced"])
        _record(server, project.id, _bounce("carol@example.com", "evt-del"))
        _wait_deliveries(server, made["id"], lambda log: log and log[0]["attempts"])
        assert server.client().delete(f"/v1/webhooks/{made['id']}").status_code == 204
        time.sleep(0.5)  # retries are due within 0.2 s: any still coming would come now
        count = len(failing.requests)
        time.sleep(0.5)
        assert len(failing.requests) == count
    assert (
        server.database.query(
            "SELECT id FROM outbound_deliveries WHERE webhook_id = :id", id=made["id"]
        )
        == []
    )


def test_a_private_address_is_refused_under_the_guard(
    gf_server_factory: Any, receiver: Receiver
) -> None:
    guarded: GFServer = gf_server_factory(
        env={**FAST_RETRIES, "GETFLUXLY_MULTI_TENANT_GUARD": "true"}
    )
    project = guarded.create_project("Guarded")
    # Registering is allowed: where a name points is decided when a delivery connects.
    made = _create(guarded, project.id, f"{receiver.url}/internal", ["message.bounced"])
    _record(guarded, project.id, _bounce("dan@example.com", "evt-guard"))
    # Refused on every attempt, until the attempts run out.
    [delivery] = _wait_deliveries(
        guarded, made["id"], lambda log: log and log[0]["status"] == "failed"
    )
    assert [a["attempt"] for a in delivery["attempts"]] == list(range(1, 9))
    for attempt in delivery["attempts"]:
        assert attempt["status_code"] is None
        assert attempt["error"] == "connection_refused: no answer from 127.0.0.1"
        assert attempt["response_excerpt"] is None
    assert receiver.requests == []
    # The operator sees why in the server log; the tenant sees a refused connection.
    assert "multi-tenant guard refused" in guarded.logs()


def test_a_closed_port_is_logged_and_retried(server: GFServer, project: GFProject) -> None:
    with Receiver() as gone:
        url = gone.url
    made = _create(server, project.id, url, ["message.bounced"])
    _record(server, project.id, _bounce("erin@example.com", "evt-closed"))
    [delivery] = _wait_deliveries(
        server, made["id"], lambda log: log and len(log[0]["attempts"]) >= 2
    )
    assert delivery["status"] == "pending"
    assert {a["error"] for a in delivery["attempts"]} == {
        "connection_refused: no answer from 127.0.0.1"
    }
    server.client().delete(f"/v1/webhooks/{made['id']}")


def test_keys_rotate_re_encrypts_endpoint_secrets(gf_server_factory: Any, tmp_path: Path) -> None:
    first: GFServer = gf_server_factory()
    project = first.create_project("Rotation")
    with Receiver() as endpoint:
        made = _create(first, project.id, endpoint.url, ["message.bounced"])
        before = first.database.query("SELECT secret FROM outbound_webhooks")[0]["secret"]
        old_keys = first.encryption_keys
        new_key = first.cli("keys", "generate-encryption-key").stdout.strip()
        keys = f"{new_key},{old_keys}"
        rotated = first.cli("keys", "rotate", env={"GETFLUXLY_ENCRYPTION_KEYS": keys})
        assert "re-encrypted" in rotated.stderr
        after = first.database.query("SELECT secret FROM outbound_webhooks")[0]["secret"]
        assert after != before
        assert after.split(".")[1] == new_key.split(":")[0]
        # Only the new key from now on: the endpoint still signs with its own secret.
        first.restart(env={"GETFLUXLY_ENCRYPTION_KEYS": new_key, **FAST_RETRIES})
        _record(first, project.id, _bounce("fay@example.com", "evt-rot"))
        _wait_deliveries(first, made["id"], lambda log: log and log[0]["status"] == "succeeded")
        [request] = endpoint.requests
        verify_signature(made["secret"], request)
    del tmp_path


def test_answers_follow_the_contract_shapes(server: GFServer, project: GFProject) -> None:
    """Unknown ids answer 404 the same way whatever exists."""
    owner = server.client()
    for method, path in (
        ("GET", "/v1/webhooks/wh_00000000000000000000"),
        ("PATCH", "/v1/webhooks/wh_00000000000000000000"),
        ("DELETE", "/v1/webhooks/wh_00000000000000000000"),
        ("GET", "/v1/webhooks/wh_00000000000000000000/deliveries"),
    ):
        response = owner.request(method, path, json={} if method == "PATCH" else None)
        expect_error(response, 404, "not_found")
    expect_error(
        owner.post("/v1/projects/prj_00000000000000000000/webhooks",
                   json={"url": "https://a.example", "events": ["message.bounced"]}),
        404, "not_found",
    )  # fmt: skip
    assert isinstance(httpx.URL(server.url), httpx.URL)


def test_a_bounce_posted_by_a_relay_reaches_the_customers_endpoint(
    server: GFServer, project: GFProject, receiver: Receiver
) -> None:
    """The whole loop: a relay posts a hard bounce to the generic inbound webhook (signed
    with the project's secret for it); the customer's endpoint receives it, signed with its
    own secret."""
    made = _create(server, project.id, f"{receiver.url}/hook", ["message.bounced"])
    issued = server.client().post(
        f"/v1/projects/{project.id}/webhook-secrets", json={"relay": "smtp"}
    )
    assert issued.status_code == 201, issued.text
    relay_secret = issued.json()["webhook_secret"]["secret"]
    stamp = int(time.time())
    body = json.dumps({"events": [{
        "id": "relay-evt-1", "type": "bounced", "email": "gus@example.com",
        "bounce_type": "hard", "reason": "550 5.1.1 user unknown",
        "timestamp": datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z"),
    }]}).encode()  # fmt: skip
    posted = server.anonymous_client().post(
        f"/webhooks/smtp/{project.id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            **standard_headers(relay_secret, "relay-msg-1", stamp, body),
        },
    )
    assert posted.status_code in (200, 202, 204), posted.text
    [delivery] = _wait_deliveries(
        server, made["id"], lambda log: log and log[0]["status"] == "succeeded"
    )
    [request] = receiver.requests
    assert request.headers["webhook-id"] == delivery["id"]
    verify_signature(made["secret"], request)
    with pytest.raises(AssertionError):  # the relay's secret is not the endpoint's
        verify_signature(relay_secret, request)
    data = request.json["data"]
    assert (data["email"], data["bounce_type"], data["source"]) == (
        "gus@example.com", "hard", "smtp",
    )  # fmt: skip
