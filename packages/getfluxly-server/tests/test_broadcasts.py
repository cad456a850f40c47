"""Broadcasts through the real server and worker processes, on SQLite and PostgreSQL (engine
spec section 5), to a real SMTP relay on loopback that counts what it receives.

- The API: create (201 ``draft``), read with counts, list, change a draft, and every action
  from every status (409 ``invalid_transition`` where it does not apply); unknown template,
  segment or provider 400 naming the field; bad input 400.
- A scheduled broadcast due while no worker ran starts once one does.
- 10,000 members, paused and resumed twice mid-send: nothing goes out while paused, and every
  member receives exactly one message (counted at the relay).
- The worker killed with SIGKILL mid-send, twice: nobody receives a message twice, and every
  member's message ends ``sent`` (or ``unknown`` for the chunk a killed worker had in flight).

Audiences are written straight into ``segment_members`` (``flux_testkit.audience``).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from flux_testkit import audience
from flux_testkit.gfserver import GFProject, GFServer, expect_error
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.storage.db import Database

#: Short leases (a killed worker's messages come back in seconds), quiet logs.
WORKER_ENV: dict[str, str | None] = {
    "GETFLUXLY_DELIVERY_LEASE_SECONDS": "5",
    "GETFLUXLY_WORKER_THREADS": "1",
    "GETFLUXLY_LOG_LEVEL": "WARNING",
}


class Project:
    """A project of the server with a provider on ``relay`` and a template."""

    def __init__(self, server: GFServer, relay: SMTPTestServer) -> None:
        self.server = server
        self.gf: GFProject = server.create_project(f"Broadcasts {uuid.uuid4().hex[:6]}")
        self.id = self.gf.id
        self.provider_id = server.create_smtp_provider(self.id, relay.host, relay.port)["id"]
        made = self.owner.post(
            f"/v1/projects/{self.id}/templates",
            json={"name": "news", "subject": "News for {{ profile.n }}",
                  "text": "Hello {{ profile.email }}"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        self.template_id = str(made.json()["template"]["id"])
        self.db = Database(server.database.sqlalchemy_url)

    @property
    def owner(self) -> httpx.Client:
        return self.server.client()

    def segment(self, members: int) -> str:
        return audience.add_segment(self.db, self.id, members).segment_id

    def create(self, segment_id: str, **fields: Any) -> dict[str, Any]:
        body = {"name": "News", "template_id": self.template_id, "segment_id": segment_id}
        response = self.owner.post(f"/v1/projects/{self.id}/broadcasts", json={**body, **fields})
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()["broadcast"]
        return made

    def act(self, broadcast_id: str, action: str) -> dict[str, Any]:
        response = self.owner.post(f"/v1/broadcasts/{broadcast_id}/{action}")
        assert response.status_code == 200, response.text
        done: dict[str, Any] = response.json()["broadcast"]
        return done

    def get(self, broadcast_id: str) -> dict[str, Any]:
        response = self.owner.get(f"/v1/broadcasts/{broadcast_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["broadcast"]
        return found

    def statuses(self, broadcast_id: str) -> Counter[str]:
        rows = self.server.database.query(
            "SELECT status, count(*) AS n FROM messages WHERE broadcast_id = :b GROUP BY status",
            b=broadcast_id,
        )
        return Counter({str(r["status"]): int(r["n"]) for r in rows})

    def close(self) -> None:
        self.db.dispose()


# -- the API --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_server(gf_module_api: GFServer) -> GFServer:
    """``getfluxly api`` (no workers: what the API records stays as it recorded it)."""
    return gf_module_api


@pytest.fixture(scope="module")
def idle_relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(auth=True) as relay:
        yield relay


@pytest.fixture
def project(api_server: GFServer, idle_relay: SMTPTestServer) -> Iterator[Project]:
    made = Project(api_server, idle_relay)
    try:
        yield made
    finally:
        made.close()


def test_a_broadcast_is_created_as_a_draft_and_read_with_its_counts(project: Project) -> None:
    segment = project.segment(3)
    made = project.create(segment, rate_per_minute=600, provider_id=project.provider_id)
    assert made["id"].startswith("brd_")
    assert made["status"] == "draft"
    assert made["counts"] == {
        "targeted": 0, "sent": 0, "failed": 0, "suppressed": 0, "pending": 0, "skipped": 0,
        "cancelled": 0,
    }  # fmt: skip
    assert (made["template_id"], made["segment_id"], made["rate_per_minute"]) == (
        project.template_id, segment, 600,
    )  # fmt: skip
    assert project.get(made["id"]) == made

    later = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    changed = project.owner.patch(
        f"/v1/broadcasts/{made['id']}", json={"name": "March news", "send_at": later}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["broadcast"]["name"] == "March news"
    assert changed.json()["broadcast"]["send_at"] == later

    other = project.create(segment)
    listed = project.owner.get(f"/v1/projects/{project.id}/broadcasts", params={"limit": 1})
    assert listed.status_code == 200, listed.text
    assert [b["id"] for b in listed.json()["broadcasts"]] == [other["id"]]
    rest = project.owner.get(
        f"/v1/projects/{project.id}/broadcasts",
        params={"limit": 1, "cursor": listed.json()["next_cursor"]},
    ).json()
    assert [b["id"] for b in rest["broadcasts"]] == [made["id"]]
    assert rest["next_cursor"] is None
    drafts = project.owner.get(
        f"/v1/projects/{project.id}/broadcasts", params={"status": "sending"}
    ).json()
    assert drafts["broadcasts"] == []


def test_starting_snapshots_the_segment_and_each_action_moves_the_status(
    project: Project,
) -> None:
    segment = project.segment(25)
    broadcast = project.create(segment)["id"]

    started = project.act(broadcast, "start")
    assert started["status"] == "sending"
    assert started["counts"]["targeted"] == 25
    assert started["counts"]["pending"] == 25
    assert started["started_at"] is not None
    # A member who joins now is not in this broadcast's audience: it was taken at the start.
    audience.add_member(project.db, project.id, segment, 25)
    paused = project.act(broadcast, "pause")
    assert paused["status"] == "paused"
    assert project.act(broadcast, "resume")["status"] == "sending"
    cancelled = project.act(broadcast, "cancel")
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["pending"] == 0
    assert cancelled["counts"]["cancelled"] == 25
    assert cancelled["counts"]["targeted"] == 25
    assert cancelled["finished_at"] is not None


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        ("draft", ("pause", "resume")),
        ("scheduled", ("start", "pause", "resume")),
        ("sending", ("start", "resume")),
        ("paused", ("start", "pause")),
        ("cancelled", ("start", "pause", "resume", "cancel")),
    ],
)
def test_an_action_the_status_does_not_allow_is_409_invalid_transition(
    project: Project, status: str, refused: tuple[str, ...]
) -> None:
    segment = project.segment(2)
    fields = {}
    if status == "scheduled":
        fields["send_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    broadcast = project.create(segment, **fields)["id"]
    path = {"draft": [], "scheduled": ["start"], "sending": ["start"],
            "paused": ["start", "pause"], "cancelled": ["cancel"]}[status]  # fmt: skip
    for action in path:
        project.act(broadcast, action)
    assert project.get(broadcast)["status"] == status
    for action in refused:
        response = project.owner.post(f"/v1/broadcasts/{broadcast}/{action}")
        detail = expect_error(response, 409, "invalid_transition")
        assert status in detail
        assert (response.json()["status"], response.json()["action"]) == (status, action)
    assert project.get(broadcast)["status"] == status
    if status not in ("draft", "scheduled"):
        edit = project.owner.patch(f"/v1/broadcasts/{broadcast}", json={"name": "x"})
        expect_error(edit, 409, "invalid_transition")


def test_unknown_references_are_400_naming_the_field(
    project: Project, api_server: GFServer, idle_relay: SMTPTestServer
) -> None:
    segment = project.segment(1)
    elsewhere = Project(api_server, idle_relay)  # another project of the same workspace
    try:
        foreign_segment = elsewhere.segment(1)
        body = {"name": "News", "template_id": project.template_id, "segment_id": segment}
        for field, value in (
            ("template_id", "tpl_00000000000000000000"),
            ("template_id", elsewhere.template_id),
            ("segment_id", "seg_00000000000000000000"),
            ("segment_id", foreign_segment),
            ("provider_id", "prv_00000000000000000000"),
            ("provider_id", elsewhere.provider_id),
        ):
            response = project.owner.post(
                f"/v1/projects/{project.id}/broadcasts", json={**body, field: value}
            )
            detail = expect_error(response, 400, "validation_error")
            assert response.json()["field"] == field, (field, value, detail)
            assert detail.startswith(field)
        draft = project.create(segment)["id"]
        response = project.owner.patch(
            f"/v1/broadcasts/{draft}", json={"segment_id": foreign_segment}
        )
        assert expect_error(response, 400, "validation_error").startswith("segment_id")
        assert project.get(draft)["segment_id"] == segment
    finally:
        elsewhere.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"rate_per_minute": "fast"}, "rate_per_minute"),
        ({"send_at": "2026-03-01T09:00:00"}, "send_at"),  # no zone
        ({"send_at": "next tuesday"}, "send_at"),
        ({"colour": "red"}, "colour"),
        ({"template_id": None}, "template_id"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    project: Project, change: dict[str, Any], field: str
) -> None:
    segment = project.segment(1)
    body = {"name": "News", "template_id": project.template_id, "segment_id": segment}
    response = project.owner.post(f"/v1/projects/{project.id}/broadcasts", json={**body, **change})
    expect_error(response, 400, "validation_error")
    assert response.json()["field"] == field
    assert project.owner.get(f"/v1/projects/{project.id}/broadcasts").json()["broadcasts"] == []


def test_an_unknown_broadcast_is_404(project: Project) -> None:
    missing = "brd_00000000000000000000"
    expect_error(project.owner.get(f"/v1/broadcasts/{missing}"), 404, "not_found")
    expect_error(project.owner.post(f"/v1/broadcasts/{missing}/start"), 404, "not_found")


# -- sending, with workers ------------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(auth=True, pipelining=True) as smtp:
        yield smtp


def _received(relay: SMTPTestServer) -> Counter[str]:
    return Counter(r for m in list(relay.messages) for r in m.rcpt_tos)


@pytest.mark.timeout(300)
def test_a_scheduled_broadcast_due_while_no_worker_ran_starts_when_one_does(
    gf_server_factory: Any, relay: SMTPTestServer
) -> None:
    server: GFServer = gf_server_factory(mode="api", env=WORKER_ENV)
    project = Project(server, relay)
    try:
        segment = project.segment(20)
        send_at = datetime.now(UTC) + timedelta(seconds=1)
        broadcast = project.create(segment, send_at=send_at.isoformat())["id"]
        assert project.act(broadcast, "start")["status"] == "scheduled"
        eventually(
            lambda: datetime.now(UTC) > send_at + timedelta(seconds=0.5), "past send_at", 240
        )
        assert project.get(broadcast)["status"] == "scheduled"  # nobody to start it

        server.start_worker()
        eventually(lambda: project.get(broadcast)["status"] == "sent", "sent", 60)
        assert _received(relay) == Counter({audience.address(n): 1 for n in range(20)})
        counts = project.get(broadcast)["counts"]
        assert (counts["targeted"], counts["sent"], counts["pending"]) == (20, 20, 0)
    finally:
        project.close()


MEMBERS = 10_000


@pytest.mark.timeout(600)
def test_ten_thousand_members_paused_and_resumed_twice_each_get_exactly_one_message(
    gf_server_factory: Any, relay: SMTPTestServer
) -> None:
    # The server's own lease: this test is about pauses, not about workers that die.
    env = {**WORKER_ENV, "GETFLUXLY_DELIVERY_LEASE_SECONDS": None}
    server: GFServer = gf_server_factory(mode="api", env=env)
    project = Project(server, relay)
    try:
        segment = project.segment(MEMBERS)
        broadcast = project.create(segment)["id"]
        server.start_worker()
        project.act(broadcast, "start")
        for threshold in (MEMBERS // 5, MEMBERS // 2):
            eventually(lambda t=threshold: len(relay.messages) >= t, f"{threshold} received", 240)
            assert project.act(broadcast, "pause")["status"] == "paused"
            # Chunks already handed to the relay finish; then nothing more goes out.
            eventually(
                lambda: project.statuses(broadcast)["sending"] == 0, "in-flight chunks done", 240
            )
            settled = len(relay.messages)
            time.sleep(1.5)
            assert len(relay.messages) == settled, "messages went out while paused"
            paused = project.get(broadcast)
            assert paused["status"] == "paused"
            assert paused["counts"]["pending"] > 0, "the pause came too late to test anything"
            statuses = project.statuses(broadcast)
            assert paused["counts"]["sent"] == settled, (paused["counts"], statuses)
            assert project.act(broadcast, "resume")["status"] == "sending"
        eventually(lambda: project.get(broadcast)["status"] == "sent", "sent", 240)

        received = _received(relay)
        assert len(received) == MEMBERS
        assert set(received.values()) == {1}, "someone received two messages"
        assert received.keys() == {audience.address(n) for n in range(MEMBERS)}
        assert project.statuses(broadcast) == Counter({"sent": MEMBERS})
        counts = project.get(broadcast)["counts"]
        assert counts == {
            "targeted": MEMBERS, "sent": MEMBERS, "failed": 0, "suppressed": 0, "pending": 0,
            "skipped": 0, "cancelled": 0,
        }  # fmt: skip
    finally:
        project.close()


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_send_never_doubles_a_message(
    gf_server_factory: Any, relay: SMTPTestServer
) -> None:
    members = 3_000
    server: GFServer = gf_server_factory(mode="api", env=WORKER_ENV)
    project = Project(server, relay)
    try:
        segment = project.segment(members)
        broadcast = project.create(segment, rate_per_minute=60_000)["id"]  # 1,000 a second
        project.act(broadcast, "start")
        for kill in range(2):
            worker = server.start_worker()
            floor = len(relay.messages)
            eventually(
                lambda f=floor: len(relay.messages) > f + 200,
                f"sending again after kill {kill}",
                240,
            )
            server.kill_worker(worker)
            assert worker.returncode == -9
        server.start_worker()
        eventually(lambda: project.get(broadcast)["status"] == "sent", "sent", 240)

        received = _received(relay)
        assert set(received.values()) == {1}, "a member received two messages"
        statuses = project.statuses(broadcast)
        assert set(statuses) <= {"sent", "unknown"}
        assert sum(statuses.values()) == members  # one message per member, no more
        # Every sent one arrived; the unknown ones are the chunks killed workers had in flight
        # (and any whose lease ran out on this busy machine): at most once each, never again.
        rows = server.database.query(
            "SELECT to_email, status FROM messages WHERE broadcast_id = :b", b=broadcast
        )
        assert all(r["to_email"] in received for r in rows if r["status"] == "sent")
        counts = project.get(broadcast)["counts"]
        assert (counts["sent"], counts["failed"], counts["pending"]) == (
            statuses["sent"], statuses["unknown"], 0,
        )  # fmt: skip
    finally:
        project.close()
