"""Events stitched and consumed a chunk at a time, on SQLite and PostgreSQL: the same
outcomes as one event at a time.

Stitching finds the profiles of a chunk's known people in one query and the automations'
consumer enters and advances a chunk's runs together (their sends recorded set-based), so
these tests send many events in one batch request, which the worker then takes as one chunk:
a person known, new, without an address, seen twice, merged by an earlier event of the same
chunk; a frequency cap shared by two automations that both start in the chunk. Real API
process, the worker in this process (``flux_testkit.automations``), mail at a real relay.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from flux_testkit.automations import Engine, engine
from flux_testkit.gfserver import GFServer

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import SMTPServerFactory

START = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def api_server(gf_module_api: GFServer) -> GFServer:
    """``getfluxly api`` (no worker threads) per backend, shared by this module's tests."""
    return gf_module_api


@pytest.fixture
def eng(api_server: GFServer, smtp_server: SMTPServerFactory) -> Iterator[Engine]:
    relay = smtp_server(tls="none", auth=True)
    with engine(api_server, relay, START) as made:
        yield made
        for automation in made.api.get(f"/v1/projects/{made.project.id}/automations").json()[
            "automations"
        ]:
            made.api.post(f"/v1/automations/{automation['id']}/pause")


def _batch(eng: Engine, events: list[dict[str, Any]]) -> None:
    """One request, so the worker stitches the events as one chunk."""
    sent = eng.ingest.post("/v1/events/batch", json={"events": events})
    assert sent.status_code == 202, sent.text
    assert sent.json()["accepted"] == len(events)
    eng.settle()


def _outcomes(eng: Engine, automation_id: str) -> Counter[tuple[str, str]]:
    rows = eng.server.database.query(
        "SELECT p.id AS profile, l.outcome FROM automation_step_log l "
        "JOIN profiles p ON p.id = l.profile_id WHERE l.automation_id = :a",
        a=automation_id,
    )
    return Counter((r["profile"], r["outcome"]) for r in rows)


def test_a_chunk_of_signups_sends_each_known_address_once(eng: Engine) -> None:
    welcome = eng.template("Welcome")
    automation = eng.automation(
        {
            "name": "Welcome",
            "trigger": {"event": "signed_up"},
            "steps": [{"id": "hi", "type": "send_email", "template_id": welcome}],
        }
    )
    for user in ("ann", "bob"):
        eng.identify(user, email=f"{user}@example.com")
    eng.identify("nomail", name="No address")
    _batch(
        eng,
        [
            {"event": "signed_up", "external_id": "ann"},
            {"event": "signed_up", "external_id": "bob"},
            {"event": "signed_up", "external_id": "nomail"},
            {"event": "signed_up", "external_id": "newcomer"},  # unknown: a new profile
            {"type": "identify", "external_id": "cat", "traits": {"email": "cat@example.com"}},
            {"event": "signed_up", "external_id": "cat"},  # new, then known, in one chunk
            {"event": "signed_up", "external_id": "ann"},  # again: re-entry "once"
        ],
    )
    assert eng.inbox() == Counter(
        {(f"{u}@example.com", "Welcome"): 1 for u in ("ann", "bob", "cat")}
    )
    outcomes = _outcomes(eng, automation["id"])
    by_outcome = Counter(outcome for _, outcome in outcomes.elements())
    assert by_outcome["sent"] == 3
    assert by_outcome["failed"] == 2  # nomail and newcomer have no address; their runs end
    assert {eng.profile_id(u) for u in ("nomail", "newcomer")} == {
        profile for profile, outcome in outcomes if outcome == "failed"
    }
    sent = eng.server.database.query(
        "SELECT l.message_id, m.idempotency_key, m.status FROM automation_step_log l "
        "JOIN messages m ON m.id = l.message_id WHERE l.outcome = 'sent' AND l.automation_id = :a",
        a=automation["id"],
    )
    assert len(sent) == 3  # each "sent" row names its message
    assert all(r["idempotency_key"].startswith(f"automation:{automation['id']}:hi:") for r in sent)
    assert {r["status"] for r in sent} == {"sent"}


def test_a_frequency_cap_counts_sends_of_runs_started_in_the_same_chunk(eng: Engine) -> None:
    first, second = eng.template("First"), eng.template("Second")
    capped = {"max": 1, "per": "P1D"}
    a = eng.automation(
        {
            "name": "A", "trigger": {"event": "signed_up"}, "frequency_cap": capped,
            "steps": [{"id": "a", "type": "send_email", "template_id": first}],
        }
    )  # fmt: skip
    b = eng.automation(
        {
            "name": "B", "trigger": {"event": "signed_up"}, "frequency_cap": capped,
            "steps": [{"id": "b", "type": "send_email", "template_id": second}],
        }
    )  # fmt: skip
    eng.identify("dee", email="dee@example.com")
    eng.identify("eve", email="eve@example.com")
    _batch(
        eng,
        [{"event": "signed_up", "external_id": user} for user in ("dee", "eve")],
    )
    # Each person's one message of the day: the first automation's; the second is capped.
    assert eng.inbox() == Counter({(f"{u}@example.com", "First"): 1 for u in ("dee", "eve")})
    assert Counter(o for _, o in _outcomes(eng, b["id"]).elements())["capped"] == 2
    assert Counter(o for _, o in _outcomes(eng, a["id"]).elements())["sent"] == 2


def test_an_event_after_a_merge_in_the_same_chunk_goes_to_the_survivor(eng: Engine) -> None:
    """``fay`` (known by an external id) and an anonymous visitor ``v1`` are two profiles;
    the first event of the chunk carries both ids and merges them; the next one, by ``v1``
    alone, must land on the survivor, not on the profile merged away a moment before."""
    welcome = eng.template("Welcome")
    automation = eng.automation(
        {
            "name": "Welcome",
            "trigger": {"event": "signed_up"},
            "steps": [{"id": "hi", "type": "send_email", "template_id": welcome}],
        }
    )
    eng.identify("fay", email="fay@example.com")
    visitor = eng.ingest.post("/v1/events", json={"event": "page_viewed", "anonymous_id": "v1"})
    assert visitor.status_code == 202
    eng.settle()
    fay = eng.profile_id("fay")
    _batch(
        eng,
        [
            {"event": "logged_in", "external_id": "fay", "anonymous_id": "v1"},
            {"event": "signed_up", "anonymous_id": "v1"},
        ],
    )
    rows = eng.server.database.query(
        "SELECT name, profile_id FROM events WHERE project_id = :p AND name IN "
        "('logged_in', 'signed_up')",
        p=eng.project.id,
    )
    assert {r["name"]: r["profile_id"] for r in rows} == {"logged_in": fay, "signed_up": fay}
    assert eng.inbox() == Counter({("fay@example.com", "Welcome"): 1})
    assert set(_outcomes(eng, automation["id"])) == {(fay, "entered"), (fay, "sent"),
                                                     (fay, "completed")}  # fmt: skip
