"""Erasure reaches the message ledger, on SQLite and on PostgreSQL.

Contract (``POST /v1/profiles/{id}/erase``, carried out by a worker): every message of the
erased profiles, and every message of the project sent to their address, keeps only what
counts need (status, times, ids, attempts): the recipient reads ``erased``; subject, bodies,
data, tags and the relay's last reply are cleared, and so is every history detail. A message
still to be sent is ``failed`` ("profile erased") in the same transaction, so no worker sends
it, and it can never be retried. Other people's messages are untouched.

"Erased" is checked in the database itself: every column of every table is searched for the
address, which carries a marker (``pii`` + hex) no generated id can contain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest

from flux_testkit.drain import Drain, ingest_drain
from flux_testkit.gfserver import GFServer, expect_error
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.storage.db import Database


@pytest.fixture(scope="module")
def server(gf_module_api: GFServer) -> GFServer:
    """``getfluxly api`` (no worker threads) per backend, shared by this module's tests."""
    return gf_module_api


@pytest.fixture(scope="module")
def drain(server: GFServer) -> Iterator[Drain]:
    """Run every due job with the server's own handlers, in this process; how many ran."""
    db = Database(server.database.sqlalchemy_url)
    try:
        yield ingest_drain(db)
    finally:
        db.dispose()


def _message(server: GFServer, message_id: str) -> dict[str, Any]:
    response = server.client().get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def test_erasure_scrubs_the_persons_messages_and_stops_pending_ones(
    server: GFServer, drain: Drain
) -> None:
    with SMTPTestServer(tls="none", auth=True) as relay:
        project = server.create_project("Message erasure")
        server.create_smtp_provider(project.id, relay.host, relay.port)
    api = server.client(project.secret_key)
    mark = f"pii{uuid.uuid4().hex[:12]}"
    address = f"{mark}@example.com"
    identify = {"type": "identify", "external_id": f"user-{mark}", "traits": {"email": address}}
    assert api.post("/v1/events", json=identify).status_code == 202
    drain()
    [profile] = (
        server.client()
        .get(f"/v1/projects/{project.id}/profiles", params={"identity": f"user-{mark}"})
        .json()["profiles"]
    )

    def send(to: Any, **extra: Any) -> dict[str, Any]:
        body = {"to": to, "subject": f"For {mark}", "html": f"<p>{mark}</p>", **extra}
        response = api.post("/v1/messages", json=body)
        assert response.status_code == 202, response.text
        message: dict[str, Any] = response.json()["message"]
        return message

    pending = send({"profile_id": profile["id"]}, data={"who": mark}, tags={"who": mark})
    # Sent to the address alone (no profile link), in another spelling of its domain.
    delivered = send(f"{mark}@EXAMPLE.com")
    failed = send({"external_id": f"user-{mark}"})
    # Held by a worker right now, and waiting for its next attempt.
    leased = send({"profile_id": profile["id"]})
    deferred = send({"profile_id": profile["id"]})
    someone_else = send("someone@example.com", subject="For someone", html="<p>Hi</p>")
    server.database.execute(
        "UPDATE messages SET status = 'sending', locked_by = 'worker-1', lease_until = :t "
        "WHERE id = :id",
        t=datetime.now(UTC), id=leased["id"],
    )  # fmt: skip
    server.database.execute(
        "UPDATE messages SET status = 'deferred', attempts = 1 WHERE id = :id", id=deferred["id"]
    )
    sent_at = datetime.now(UTC)
    server.database.execute(
        "UPDATE messages SET status = 'sent', attempts = 1, sent_at = :t, due_at = NULL, "
        "provider_message_id = 'relay-1', last_reply = :reply WHERE id = :id",
        t=sent_at, reply=f"250 2.0.0 Ok: queued for <{address}>", id=delivered["id"],
    )  # fmt: skip
    server.database.execute(
        "UPDATE messages SET status = 'failed', attempts = 1, due_at = NULL, last_reply = :r "
        "WHERE id = :id",
        r=f"550 5.1.1 <{address}>: mailbox unavailable", id=failed["id"],
    )  # fmt: skip
    for message_id, status, detail in (
        (delivered["id"], "sent", f"250 accepted for {address}"),
        (failed["id"], "failed", f"550 no such user {address}"),
    ):
        server.database.execute(
            "INSERT INTO message_history (message_id, status, at, detail) "
            "VALUES (:id, :s, :at, :d)",
            id=message_id, s=status, at=sent_at, d=detail,
        )  # fmt: skip
    assert (
        len(server.database.cells_containing(mark, ignore_case=True)) > 5
    )  # the search finds what is there

    erase = api.post(f"/v1/profiles/{profile['id']}/erase", json={"reason": "gdpr_dsr"})
    assert erase.status_code == 202, erase.text
    assert drain() >= 1

    leftovers = server.database.cells_containing(mark, ignore_case=True)
    assert leftovers == [], "personal data left after erasure:\n" + "\n".join(leftovers)

    stopped = _message(server, pending["id"])
    assert stopped["status"] == "failed"
    assert [(h["status"], h["detail"]) for h in stopped["history"]] == [
        ("queued", None),
        ("failed", "profile erased"),
    ]
    assert (stopped["to"], stopped["subject"], stopped["tags"]) == ("erased", None, {})
    assert stopped["erased_at"] is not None
    assert stopped["profile_id"] == profile["id"]  # kept for counts
    [row] = server.database.query(
        "SELECT due_at, html, text, data FROM messages WHERE id = :id", id=pending["id"]
    )
    assert (row["due_at"], row["html"], row["text"]) == (None, None, None)
    assert row["data"] in ({}, "{}")

    for message in (leased, deferred):
        assert _message(server, message["id"])["status"] == "failed"
        [row] = server.database.query(
            "SELECT due_at, locked_by, lease_until FROM messages WHERE id = :id", id=message["id"]
        )
        assert (row["due_at"], row["locked_by"], row["lease_until"]) == (None, None, None)

    kept = _message(server, delivered["id"])
    assert (kept["status"], kept["attempts"], kept["provider_message_id"]) == ("sent", 1, "relay-1")
    assert kept["sent_at"] is not None
    assert kept["last_reply"] is None
    assert kept["to"] == "erased"
    assert kept["profile_id"] is None
    assert [(h["status"], h["detail"]) for h in kept["history"]] == [
        ("queued", None),
        ("sent", None),
    ]
    assert _message(server, failed["id"])["status"] == "failed"

    untouched = _message(server, someone_else["id"])
    assert untouched["to"] == "someone@example.com"
    assert untouched["subject"] == "For someone"
    assert untouched["status"] == "queued"
    assert untouched["erased_at"] is None

    owner = server.client()
    for message in (pending, failed):
        response = owner.post(f"/v1/messages/{message['id']}/retry")
        assert "erased" in expect_error(response, 409, "not_retryable")
    again = api.post(
        "/v1/messages", json={"to": {"profile_id": profile["id"]}, "subject": "x", "text": "y"}
    )
    expect_error(again, 409, "profile_erased")


def test_a_message_recorded_while_the_erasure_runs_is_stopped_too(
    server: GFServer, drain: Drain
) -> None:
    """A message for the person whose recording has not committed when the erasure job
    starts is still scrubbed and failed, never left to be sent.

    The test holds a send's transaction open after it recorded the message (the profile
    share-locked, the project row key-share-locked by the message's foreign key), asks for
    the erasure, and lets the send commit once the erasure job waits for it. A weaker lock
    would let the erasure finish first and the message escape, queued.
    """
    if server.database.backend != "postgres":
        pytest.skip("SQLite takes its write lock at BEGIN: no send is in flight meanwhile")
    from getfluxly_server.domain import messages
    from getfluxly_server.storage.db import Database

    with SMTPTestServer(tls="none", auth=True) as relay:
        project = server.create_project("In-flight send")
        server.create_smtp_provider(project.id, relay.host, relay.port)
    api = server.client(project.secret_key)
    identify = {"type": "identify", "external_id": "in-flight", "traits": {"email": "f@x.org"}}
    assert api.post("/v1/events", json=identify).status_code == 202
    drain()
    [profile] = (
        server.client()
        .get(f"/v1/projects/{project.id}/profiles", params={"identity": "in-flight"})
        .json()["profiles"]
    )
    db = Database(server.database.sqlalchemy_url)
    try:
        with ExitStack() as held, ThreadPoolExecutor(1) as pool:
            session = held.enter_context(db.transaction())
            recorded = messages.enqueue(
                session,
                project.id,
                messages.NewMessage(
                    messages.Recipient(profile_id=profile["id"]),
                    messages.Content(subject="Hi", text="Hello"),
                ),
            )
            erasure = api.post(f"/v1/profiles/{profile['id']}/erase", json={"reason": "internal"})
            assert erasure.status_code == 202, erasure.text
            ran = pool.submit(drain)
            eventually(
                lambda: server.database.lock_waiters() >= 1,
                "the erasure job to wait for the send",
                timeout=20,
                poll=0.02,
            )
            held.close()  # the send commits
            assert ran.result(30) >= 1
    finally:
        db.dispose()
    stopped = _message(server, recorded.message.id)
    assert (stopped["status"], stopped["to"]) == ("failed", "erased")
    assert stopped["history"][-1] == {
        "status": "failed",
        "at": stopped["history"][-1]["at"],
        "detail": "profile erased",
    }
