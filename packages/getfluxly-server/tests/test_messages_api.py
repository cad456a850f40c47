"""The message ledger's front through the real server, on SQLite and on PostgreSQL (engine spec
section 2): ``POST /v1/messages`` (server key, ``Idempotency-Key``), the ledger list and
detail, retry by hand, and the domain's set-based enqueue that broadcasts will use.

Contract: a recorded message is ``queued``, due now, with a ``queued`` history entry and its
provider resolved (the one named, else the project's default, else its first; none is 409
``no_provider``), or ``suppressed`` (never attempted) when its address is on the project's
suppression list. Nothing is rendered at enqueue; inline Liquid is checked to parse and a
template to exist in the project.

The API runs as ``getfluxly api`` (no workers), so every message stays exactly as this front
recorded it; the tests stitch profiles with the server's own job handlers, in this process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from flux_testkit.drain import Drain, ingest_drain
from flux_testkit.gfserver import GFProject, GFServer, expect_error
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.domain import messages
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.storage.db import Database


@pytest.fixture(scope="module")
def server(gf_module_api: GFServer) -> GFServer:
    """``getfluxly api`` (no worker threads) per backend, shared by this module's tests."""
    return gf_module_api


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    """The relay providers are verified against (nothing is sent in these tests)."""
    with SMTPTestServer(tls="none", auth=True) as smtp:
        yield smtp


@pytest.fixture(scope="module")
def db(server: GFServer) -> Iterator[Database]:
    """The server's database, opened in this process."""
    opened = Database(server.database.sqlalchemy_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture(scope="module")
def drain(db: Database) -> Drain:
    """Run every due job (event stitching, erasures) with the server's own handlers."""
    return ingest_drain(db)


class Project:
    """A project of the server with its providers, and helpers to send and read."""

    def __init__(self, server: GFServer, relay: SMTPTestServer, providers: int = 1) -> None:
        self.server = server
        self.gf: GFProject = server.create_project(f"Messages {uuid.uuid4().hex[:6]}")
        self.id = self.gf.id
        self.providers = [
            server.create_smtp_provider(self.id, relay.host, relay.port, display_name=f"R{n}")["id"]
            for n in range(providers)
        ]

    @property
    def api(self) -> httpx.Client:
        return self.server.client(self.gf.secret_key)

    def send(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return self.api.post("/v1/messages", json=body, headers=headers)

    def sent(self, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        response = self.send(body, key)
        assert response.status_code == 202, response.text
        message: dict[str, Any] = response.json()["message"]
        return message

    def identify(self, drain: Drain, external_id: str, **traits: Any) -> str:
        """A profile known by ``external_id`` with ``traits``; its id."""
        event = {"type": "identify", "external_id": external_id, "traits": traits}
        self.event(event)
        drain()
        return self.profile_id(external_id)

    def event(self, event: dict[str, Any]) -> None:
        response = self.api.post("/v1/events", json=event)
        assert response.status_code == 202, response.text

    def profile_id(self, identity: str) -> str:
        found = self.server.client().get(
            f"/v1/projects/{self.id}/profiles", params={"identity": identity}
        )
        assert found.status_code == 200, found.text
        [profile] = found.json()["profiles"]
        return str(profile["id"])

    def listed(self, **params: Any) -> dict[str, Any]:
        response = self.server.client().get(f"/v1/projects/{self.id}/messages", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def project(server: GFServer, relay: SMTPTestServer) -> Project:
    return Project(server, relay)


INLINE = {"subject": "Hi {{ data.name }}", "text": "Your code is {{ data.code }}"}


def _nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep (itself level 1)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _row(server: GFServer, message_id: str) -> dict[str, Any]:
    [row] = server.database.query("SELECT * FROM messages WHERE id = :id", id=message_id)
    return row


def _history(server: GFServer, message_id: str) -> list[tuple[str, str | None]]:
    rows = server.database.query(
        "SELECT status, detail FROM message_history WHERE message_id = :id ORDER BY id",
        id=message_id,
    )
    return [(r["status"], r["detail"]) for r in rows]


def _template(server: GFServer, project_id: str, *, deleted: bool = False) -> str:
    """A template made (edited once: version 2, and deleted if asked) through its API."""
    owner = server.client()
    made = owner.post(
        f"/v1/projects/{project_id}/templates",
        json={"name": f"t-{uuid.uuid4().hex[:8]}", "kind": "transactional",
              "subject": "Welcome {{ profile.first_name }}", "html": "<p>Hello</p>"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    template_id = str(made.json()["template"]["id"])
    edited = owner.patch(f"/v1/templates/{template_id}", json={"html": "<p>Hello!</p>"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["template"]["version"] == 2
    if deleted:
        assert owner.delete(f"/v1/templates/{template_id}").status_code in (200, 204)
    return template_id


def _suppress(server: GFServer, project_id: str, email: str, reason: str) -> None:
    response = server.client().post(
        f"/v1/projects/{project_id}/suppressions", json={"email": email, "reason": reason}
    )
    assert response.status_code in (200, 201), response.text


# -- sending --------------------------------------------------------------------------------------


def test_a_send_to_an_address_is_recorded_queued_and_due_now(
    server: GFServer, project: Project
) -> None:
    before = datetime.now(UTC)
    body = {**INLINE, "to": "Ada <Ada.L@Example.COM>", "data": {"code": 7}, "tags": {"k": "v"}}
    message = project.sent(body)
    assert message["id"].startswith("msg_")
    assert message["status"] == "queued"
    assert message["to"] == "Ada.L@example.com"  # the domain lower-cased, the local part kept
    assert message["provider_id"] == project.providers[0]
    assert message["project_id"] == project.id
    assert message["subject"] == INLINE["subject"]  # not rendered: a worker renders
    assert (message["origin"], message["transactional"], message["attempts"]) == ("api", True, 0)
    assert message["tags"] == {"k": "v"}
    assert message["profile_id"] is None
    assert message["template_id"] is None
    assert [(h["status"], h["detail"]) for h in message["history"]] == [("queued", None)]
    row = _row(server, message["id"])
    assert row["text"] == INLINE["text"]
    assert row["html"] is None
    due = row["due_at"] if isinstance(row["due_at"], datetime) else None
    if due is None:  # SQLite hands back text
        due = datetime.fromisoformat(str(row["due_at"])).replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= due.astimezone(UTC) <= datetime.now(UTC)
    assert _history(server, message["id"]) == [("queued", None)]


def test_a_template_send_records_the_template_and_its_version(
    server: GFServer, project: Project, relay: SMTPTestServer
) -> None:
    template_id = _template(server, project.id)
    message = project.sent({"to": "ada@example.com", "template_id": template_id})
    assert (message["template_id"], message["template_version"]) == (template_id, 2)
    assert message["subject"] is None
    deleted = _template(server, project.id, deleted=True)
    other = Project(server, relay)
    theirs = _template(server, other.id)
    for template in (deleted, theirs, "tpl_00000000000000000000"):
        response = project.send({"to": "ada@example.com", "template_id": template})
        detail = expect_error(response, 400, "validation_error")
        assert "template_id" in detail
        assert response.json()["field"] == "template_id"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"to": "ada@example.com"}, "subject", "template_id"),
        ({"to": "ada@example.com", "subject": "Hi"}, "html", "at least one of"),
        ({"to": "ada@example.com", "subject": "Hi {{ data.x ", "text": "x"}, "subject", "line 1"),
        ({"to": "ada@example.com", "subject": "Hi", "html": "<p>\n{% if %}</p>"}, "html", "line 2"),
        ({"to": "ada@example.com", "subject": "Hi", "text": "{{ x | nope }}"}, "text", "nope"),
        (
            {"to": "ada@example.com", "template_id": "tpl_x", "subject": "Hi", "text": "x"},
            "template_id",
            "not both",
        ),
        ({"to": "not an address", **INLINE}, "to", "not a valid email address"),
        ({"to": "", **INLINE}, "to", "empty"),
        ({"to": 42, **INLINE}, "to", "profile_id"),
        ({"to": {"profile_id": 42}, **INLINE}, "to", "profile_id"),
        ({"to": {"email": "ada@example.com"}, **INLINE}, "to", "external_id"),
        ({"to": {"profile_id": "a", "external_id": "b"}, **INLINE}, "to", "profile_id"),
        ({**INLINE}, "to", "required"),
        ({"to": "ada@example.com", **INLINE, "cc": "x@example.com"}, "cc", "not a field"),
        ({"to": "ada@example.com", **INLINE, "data": []}, "data", "dictionary"),
        ({"to": "ada@example.com", **INLINE, "data": _nested(300)}, "data", "deeper than 32"),
        ({"to": "ada@example.com", **INLINE, "data": _nested(33)}, "data", "deeper than 32"),
        ({"to": "ada@example.com", **INLINE, "tags": {"a": 1}}, "tags", "string"),
        ({"to": "ada@example.com", **INLINE, "transactional": "maybe"}, "transactional", "bool"),
        ({"to": "ada@example.com", **INLINE, "provider_id": "prv_x"}, "provider_id", "no such"),
    ],
)
def test_every_bad_body_is_a_400_naming_the_field(
    server: GFServer, project: Project, body: dict[str, Any], field: str, words: str
) -> None:
    response = project.send(body)
    detail = expect_error(response, 400, "validation_error")
    assert response.json().get("field") == field, response.text
    assert words in detail, detail
    assert (
        server.database.query("SELECT id FROM messages WHERE project_id = :p", p=project.id) == []
    )


def test_data_as_deep_as_allowed_is_kept(server: GFServer, project: Project) -> None:
    message = project.sent({"to": "ada@example.com", **INLINE, "data": _nested(32)})
    stored = _row(server, message["id"])["data"]
    assert (json.loads(stored) if isinstance(stored, str) else stored) == _nested(32)


def test_bulk_enqueue_spans_statements(server: GFServer, project: Project, db: Database) -> None:
    """More recipients than one SQLite statement takes: every one recorded, once."""
    recipients = [
        messages.BulkRecipient(f"r{n}@example.com", messages.broadcast_key("brd_big", f"p{n}"))
        for n in range(3_000)
    ]
    content, source = messages.Content(subject="x", text="y"), messages.Source()
    with db.transaction() as session:
        done = messages.enqueue_many(session, project.id, recipients, content, source)
    assert len(done.created) == len(set(done.created)) == 3_000
    with db.transaction() as session:
        again = messages.enqueue_many(session, project.id, recipients, content, source)
    assert (again.created, again.duplicates) == ([], 3_000)
    [counts] = server.database.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT to_email) AS d FROM messages WHERE project_id = :p",
        p=project.id,
    )
    [history] = server.database.query(
        "SELECT COUNT(*) AS n FROM message_history h JOIN messages m ON m.id = h.message_id "
        "WHERE m.project_id = :p",
        p=project.id,
    )
    assert (counts["n"], counts["d"], history["n"]) == (3_000, 3_000, 3_000)


def test_a_bad_idempotency_key_is_refused(project: Project) -> None:
    for key in ("automation:a:b:c:d", "broadcast:b:p", "x" * 256):
        expect_error(
            project.send({"to": "ada@example.com", **INLINE}, key), 400, "validation_error"
        )


def test_a_project_key_only_sends_for_its_own_project(server: GFServer, project: Project) -> None:
    response = server.client(project.gf.publishable_key).post(
        "/v1/messages", json={"to": "ada@example.com", **INLINE}
    )
    expect_error(response, 403, "wrong_key_type")
    response = server.client().post("/v1/messages", json={"to": "ada@example.com", **INLINE})
    expect_error(response, 403, "wrong_key_type")


# -- recipients -----------------------------------------------------------------------------------


def test_a_profile_recipient_by_id_or_external_id_goes_to_its_email_trait(
    project: Project, drain: Drain
) -> None:
    profile_id = project.identify(drain, "user-1", email="grace@Example.org", first_name="G")
    by_id = project.sent({"to": {"profile_id": profile_id}, **INLINE})
    by_external = project.sent({"to": {"external_id": "user-1"}, **INLINE})
    for message in (by_id, by_external):
        assert (message["to"], message["profile_id"]) == ("grace@example.org", profile_id)


def test_a_merged_profile_leads_to_its_survivor(project: Project, drain: Drain) -> None:
    project.event({"event": "page_viewed", "anonymous_id": "device-1"})  # the older profile
    drain()
    older = project.profile_id("device-1")
    newer = project.identify(drain, "user-2", email="linus@example.com")
    before = project.sent({"to": {"profile_id": newer}, **INLINE})
    assert before["profile_id"] == newer
    alias = project.api.post(
        "/v1/identify/alias", json={"user_id": newer, "anonymous_id": "device-1"}
    )
    assert alias.status_code == 200, alias.text
    message = project.sent({"to": {"profile_id": newer}, **INLINE})
    assert (message["profile_id"], message["to"]) == (older, "linus@example.com")
    # The message sent before the merge is the person's too.
    listed = project.listed(profile_id=older)["messages"]
    assert [m["id"] for m in listed] == [message["id"], before["id"]]
    assert project.listed(profile_id=newer)["messages"] == []


def test_profiles_that_cannot_receive_are_refused_clearly(project: Project, drain: Drain) -> None:
    no_email = project.identify(drain, "user-3", plan="pro")
    bad_email = project.identify(drain, "user-4", email="not-an-address")
    for profile_id, words in ((no_email, "no email trait"), (bad_email, "not a valid address")):
        response = project.send({"to": {"profile_id": profile_id}, **INLINE})
        assert words in expect_error(response, 400, "validation_error")
    for to in ({"profile_id": "prf_00000000000000000000"}, {"external_id": "nobody"}):
        response = project.send({"to": to, **INLINE})
        assert "no" in expect_error(response, 400, "validation_error")


def test_an_erased_or_erasing_profile_is_refused(project: Project, drain: Drain) -> None:
    profile_id = project.identify(drain, "user-5", email="erase-me@example.com")
    erase = project.api.post(f"/v1/profiles/{profile_id}/erase", json={"reason": "internal"})
    assert erase.status_code == 202, erase.text
    response = project.send({"to": {"profile_id": profile_id}, **INLINE})
    assert "being erased" in expect_error(response, 409, "profile_erased")
    drain()
    response = project.send({"to": {"profile_id": profile_id}, **INLINE})
    assert "was erased" in expect_error(response, 409, "profile_erased")


# -- idempotency ----------------------------------------------------------------------------------


def test_the_same_idempotency_key_answers_the_same_message_once(
    server: GFServer, project: Project
) -> None:
    body = {"to": "ada@example.com", **INLINE, "data": {"code": 1, "name": "Ada"}}
    first = project.sent(body, key="order-1")
    # The same request in another field order (and spacing) is the same request.
    reordered = {"data": {"name": "Ada", "code": 1}, **INLINE, "to": "ada@example.com"}
    again = project.sent(reordered, key="order-1")
    assert again["id"] == first["id"]
    rows = server.database.query("SELECT id FROM messages WHERE project_id = :p", p=project.id)
    assert [r["id"] for r in rows] == [first["id"]]
    assert _history(server, first["id"]) == [("queued", None)]

    changed = project.send({**body, "data": {"code": 2}}, key="order-1")
    assert "different" in expect_error(changed, 422, "idempotency_key_reused")
    other_key = project.sent(body, key="order-2")
    assert other_key["id"] != first["id"]


def test_concurrent_retries_with_one_key_record_one_message(
    server: GFServer, project: Project
) -> None:
    body = {"to": "ada@example.com", **INLINE}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: project.send(body, key="burst"), range(16)))
    assert [a.status_code for a in answers] == [202] * 16, [a.text for a in answers]
    assert len({a.json()["message"]["id"] for a in answers}) == 1
    rows = server.database.query("SELECT id FROM messages WHERE project_id = :p", p=project.id)
    assert len(rows) == 1


def test_concurrent_sends_share_commits_and_a_refused_one_undoes_only_itself(
    server: GFServer, project: Project
) -> None:
    """Concurrent sends are recorded in groups (one transaction each, a savepoint per send):
    a send refused in the middle of a group leaves nothing behind, not even the
    idempotency key it claimed, and takes none of its neighbours with it."""
    good = [({"to": f"user{i}@example.com", **INLINE}, f"ok-{i}") for i in range(24)]
    bad = [
        ({"to": f"bad{i}@example.com", "template_id": "tpl_00000000000000000000"}, f"bad-{i}")
        for i in range(8)
    ]
    calls = good + bad
    calls = calls[::2] + calls[1::2]  # refused sends among the good ones
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda c: project.send(c[0], key=c[1]), calls))
    by_key = {key: answer for (_, key), answer in zip(calls, answers, strict=True)}
    for _, key in good:
        assert by_key[key].status_code == 202, by_key[key].text
    for _, key in bad:
        expect_error(by_key[key], 400, "validation_error")
    rows = server.database.query(
        "SELECT to_email FROM messages WHERE project_id = :p", p=project.id
    )
    assert sorted(r["to_email"] for r in rows) == sorted(b["to"] for b, _ in good)
    # The refused sends' keys are free: the same key with a good request is recorded.
    retried = project.sent({"to": "bad0@example.com", **INLINE}, key="bad-0")
    assert retried["status"] == "queued"


def test_idempotency_keys_are_per_project(
    server: GFServer, project: Project, relay: SMTPTestServer
) -> None:
    other = Project(server, relay)
    body = {"to": "ada@example.com", **INLINE}
    assert project.sent(body, key="shared")["id"] != other.sent(body, key="shared")["id"]


def test_a_key_is_free_again_after_24_hours(server: GFServer, project: Project) -> None:
    body = {"to": "ada@example.com", **INLINE}
    first = project.sent(body, key="daily")
    server.database.execute(
        "UPDATE idempotent_responses SET created_at = :old WHERE project_id = :p",
        old=datetime.now(UTC) - timedelta(hours=25), p=project.id,
    )  # fmt: skip
    second = project.sent({**body, "subject": "Another day"}, key="daily")
    assert second["id"] != first["id"]
    assert _row(server, first["id"])["idempotency_key"] is None  # kept, key released
    assert _row(server, second["id"])["idempotency_key"] == "daily"


# -- suppression and providers --------------------------------------------------------------------


def test_a_suppressed_address_is_recorded_suppressed_and_never_due(
    server: GFServer, project: Project
) -> None:
    _suppress(server, project.id, "bounced@example.com", "hard_bounce")
    message = project.sent({"to": "Bounced@EXAMPLE.com", **INLINE})
    assert message["status"] == "suppressed"
    [entry] = message["history"]
    assert entry["status"] == "suppressed"
    assert "suppression list" in entry["detail"]
    assert "reason hard_bounce" in entry["detail"]  # the suppression's reason is named
    assert _row(server, message["id"])["due_at"] is None


def test_the_provider_is_the_named_one_else_the_default_else_the_first(
    server: GFServer, relay: SMTPTestServer
) -> None:
    project = Project(server, relay, providers=3)
    first, second, third = project.providers
    body = {"to": "ada@example.com", **INLINE}
    server.database.execute(
        "UPDATE projects SET default_provider_id = NULL WHERE id = :p", p=project.id
    )
    assert project.sent(body)["provider_id"] == first
    server.database.execute(
        "UPDATE projects SET default_provider_id = :d WHERE id = :p", d=second, p=project.id
    )
    assert project.sent(body)["provider_id"] == second
    assert project.sent({**body, "provider_id": third})["provider_id"] == third
    # A default that no longer exists falls back to the first provider.
    server.database.execute(
        "UPDATE projects SET default_provider_id = 'prv_gone' WHERE id = :p", p=project.id
    )
    assert project.sent(body)["provider_id"] == first
    # Another project's provider is never used.
    other = Project(server, relay)
    response = project.send({**body, "provider_id": other.providers[0]})
    assert expect_error(response, 400, "validation_error")


def test_a_project_without_a_provider_is_told_to_add_one(
    server: GFServer, relay: SMTPTestServer
) -> None:
    bare = Project(server, relay, providers=0)
    detail = expect_error(bare.send({"to": "ada@example.com", **INLINE}), 409, "no_provider")
    assert f"/v1/projects/{bare.id}/email-providers" in detail
    assert server.database.query("SELECT id FROM messages WHERE project_id = :p", p=bare.id) == []


# -- the ledger: list, detail, retry --------------------------------------------------------------


def test_the_list_filters_and_pages_without_gaps_or_repeats(
    server: GFServer, project: Project, db: Database
) -> None:
    # 23 messages of one broadcast share one created_at (one set-based insert); 3 API sends.
    recipients = [
        messages.BulkRecipient(f"member{n}@example.com", messages.broadcast_key("brd_1", f"p{n}"))
        for n in range(23)
    ]
    with db.transaction() as session:
        done = messages.enqueue_many(
            session, project.id, recipients, messages.Content(subject="News", text="x"),
            messages.Source(origin="broadcast", broadcast_id="brd_1", transactional=False),
        )  # fmt: skip
    assert len(done.created) == 23
    api = [project.sent({"to": f"api{n}@example.com", **INLINE}) for n in range(3)]

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = project.listed(limit=5, **({"cursor": cursor} if cursor else {}))
        assert len(page["messages"]) <= 5
        seen += page["messages"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [m["id"] for m in seen]
    assert len(ids) == len(set(ids)) == 26
    assert ids[:3] == [m["id"] for m in reversed(api)]  # newest first
    keys = [(m["created_at"], m["id"]) for m in seen]
    assert keys == sorted(keys, reverse=True)

    broadcast = project.listed(broadcast_id="brd_1", limit=500)["messages"]
    assert {m["id"] for m in broadcast} == set(done.created)
    assert all(m["origin"] == "broadcast" and not m["transactional"] for m in broadcast)
    assert [m["id"] for m in project.listed(to="API1@Example.com")["messages"]] == []
    assert [m["id"] for m in project.listed(to="api1@EXAMPLE.com")["messages"]] == [api[1]["id"]]
    assert len(project.listed(status="queued", limit=500)["messages"]) == 26
    assert project.listed(status="sent")["messages"] == []
    assert project.listed(automation_id="aut_x")["messages"] == []


def test_list_filters_by_profile(project: Project, drain: Drain) -> None:
    profile_id = project.identify(drain, "user-6", email="ken@example.com")
    mine = project.sent({"to": {"profile_id": profile_id}, **INLINE})
    project.sent({"to": "someone@example.com", **INLINE})
    assert [m["id"] for m in project.listed(profile_id=profile_id)["messages"]] == [mine["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJ4IiwgMV0"}, "cursor"),  # base64 of ["x", 1]
        ({"status": "lost"}, "status"),
        ({"to": "nobody"}, "to"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_list_parameters_are_400(project: Project, params: dict[str, Any], field: str) -> None:
    response = project.server.client().get(f"/v1/projects/{project.id}/messages", params=params)
    expect_error(response, 400, "validation_error")
    assert response.json().get("field") == field, response.text


def test_detail_shows_the_history_and_keeps_tenants_apart(
    server: GFServer, project: Project, relay: SMTPTestServer
) -> None:
    message = project.sent({"to": "ada@example.com", **INLINE})
    owner = server.client()
    response = owner.get(f"/v1/messages/{message['id']}")
    assert response.status_code == 200, response.text
    detail = response.json()["message"]
    assert detail == message
    assert set(detail) >= {
        "id", "status", "to", "subject", "provider_id", "provider_message_id",
        "smtp_message_id", "attempts", "last_reply", "automation_id", "step_id",
        "broadcast_id", "profile_id", "history",
    }  # fmt: skip

    outsider = server.create_workspace(f"Outsider {uuid.uuid4().hex[:6]}")
    theirs = server.client(outsider.key)
    missing = theirs.get("/v1/messages/msg_00000000000000000000")
    for path in (f"/v1/messages/{message['id']}",):
        answer = theirs.get(path)
        expect_error(answer, 404, "not_found")
        assert answer.json() == missing.json()
    retried = theirs.post(f"/v1/messages/{message['id']}/retry")
    expect_error(retried, 404, "not_found")
    listed = theirs.get(f"/v1/projects/{project.id}/messages")
    expect_error(listed, 404, "not_found")
    expect_error(project.api.get(f"/v1/messages/{message['id']}"), 403, "wrong_key_type")


def test_retry_requeues_only_failed_or_unknown_messages(server: GFServer, project: Project) -> None:
    owner = server.client()
    message = project.sent({"to": "ada@example.com", **INLINE})
    path = f"/v1/messages/{message['id']}/retry"
    assert "queued" in expect_error(owner.post(path), 409, "not_retryable")
    for status in ("failed", "unknown"):
        server.database.execute(
            "UPDATE messages SET status = :s, due_at = NULL, locked_by = 'w1', "
            "lease_until = :t WHERE id = :id",
            s=status, t=datetime.now(UTC), id=message["id"],
        )  # fmt: skip
        response = owner.post(
            path, json={"note": f"after {status}"} if status == "unknown" else None
        )
        assert response.status_code == 200, response.text
        retried = response.json()["message"]
        assert retried["status"] == "queued"
        assert retried["history"][-1]["status"] == "queued"
        assert retried["history"][-1]["detail"].startswith("retried by hand")
        row = _row(server, message["id"])
        assert row["due_at"] is not None
        assert (row["locked_by"], row["lease_until"]) == (None, None)
    assert retried["history"][-1]["detail"] == "retried by hand: after unknown"
    for status in ("sent", "sending", "suppressed", "deferred"):
        server.database.execute(
            "UPDATE messages SET status = :s WHERE id = :id", s=status, id=message["id"]
        )
        assert status in expect_error(owner.post(path), 409, "not_retryable")
    expect_error(owner.post(path, json={"reason": "x"}), 400, "validation_error")
    expect_error(owner.post("/v1/messages/msg_00000000000000000000/retry"), 404, "not_found")


# -- the domain's enqueue, for automations and broadcasts ------------------------------------------


def test_bulk_enqueue_records_each_key_once(
    server: GFServer, project: Project, db: Database
) -> None:
    _suppress(server, project.id, "gone@example.com", "unsubscribed")
    key = messages.broadcast_key
    recipients = [
        messages.BulkRecipient("a@example.com", key("brd_2", "p1"), "p1", {"n": 1}),
        messages.BulkRecipient("b@example.com", key("brd_2", "p2"), "p2"),
        messages.BulkRecipient("b@example.com", key("brd_2", "p2"), "p2"),  # repeated
        messages.BulkRecipient("not an address", key("brd_2", "p3"), "p3"),
        messages.BulkRecipient("gone@example.com", key("brd_2", "p4"), "p4"),
    ]
    content = messages.Content(subject="News", html="<p>{{ profile.id }}</p>")
    source = messages.Source(origin="broadcast", broadcast_id="brd_2", transactional=False)
    with db.transaction() as session:
        first = messages.enqueue_many(session, project.id, recipients, content, source)
    assert len(first.created) == 3
    assert (first.suppressed, first.duplicates, first.invalid) == (1, 1, [3])
    # A resumed broadcast: the same members again, and one new.
    again = [*recipients, messages.BulkRecipient("c@example.com", key("brd_2", "p5"), "p5")]
    with db.transaction() as session:
        second = messages.enqueue_many(session, project.id, again, content, source)
    # a, b (twice) and gone were recorded before: four duplicates, one new.
    assert (len(second.created), second.duplicates, second.invalid) == (1, 4, [3])
    rows = server.database.query(
        "SELECT to_email, status, profile_id, idempotency_key FROM messages "
        "WHERE project_id = :p ORDER BY to_email", p=project.id,
    )  # fmt: skip
    assert [(r["to_email"], r["status"], r["profile_id"]) for r in rows] == [
        ("a@example.com", "queued", "p1"),
        ("b@example.com", "queued", "p2"),
        ("c@example.com", "queued", "p5"),
        ("gone@example.com", "suppressed", "p4"),
    ]
    histories = server.database.query(
        "SELECT h.status FROM message_history h JOIN messages m ON m.id = h.message_id "
        "WHERE m.project_id = :p", p=project.id,
    )  # fmt: skip
    assert sorted(h["status"] for h in histories) == ["queued", "queued", "queued", "suppressed"]


def test_bulk_enqueue_checks_content_and_provider_before_writing(
    server: GFServer, relay: SMTPTestServer, db: Database
) -> None:
    bare = Project(server, relay, providers=0)
    one = [messages.BulkRecipient("a@example.com", "broadcast:b:p")]
    with db.transaction() as session, pytest.raises(messages.NoProvider):
        messages.enqueue_many(
            session, bare.id, one, messages.Content(subject="x", text="y"), messages.Source()
        )
    with db.transaction() as session, pytest.raises(ValidationFailed):
        messages.enqueue_many(
            session, bare.id, one, messages.Content(subject="{% if %}", text="y"), messages.Source()
        )


def test_an_automation_key_records_one_message_however_often_the_step_runs(
    project: Project, db: Database
) -> None:
    key = messages.automation_key("aut_1", "welcome", "p1", "run_1")
    new = messages.NewMessage(
        recipient=messages.Recipient(email="ada@example.com"),
        content=messages.Content(subject="Welcome", text="Hello"),
        source=messages.Source(
            origin="automation", automation_id="aut_1", step_id="welcome", transactional=False
        ),
        idempotency_key=key,
    )
    with db.transaction() as session:
        first = messages.enqueue(session, project.id, new)
    with db.transaction() as session:
        second = messages.enqueue(session, project.id, new)
    assert first.created
    assert not second.created
    assert first.message.id == second.message.id
    listed = project.listed(automation_id="aut_1")["messages"]
    assert [(m["id"], m["step_id"], m["origin"]) for m in listed] == [
        (first.message.id, "welcome", "automation")
    ]
