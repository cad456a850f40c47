"""Identity stitching through the real server, on SQLite and on PostgreSQL (spec section 3).

Contract: events carry ``anonymous_id`` (a device), ``external_id`` (the customer's user id)
and/or ``user_id`` (GetFluxly's profile id); a worker applies them after the 202, in order per
project. An event whose ids match several profiles merges them into the OLDEST: the survivor
keeps its traits and fills only missing keys, events (and identities) move to it, the others
are marked ``merged_into`` it. Identify traits merge into the profile. ``POST
/v1/identify/alias`` attaches an id to a profile, merging an anonymous-only profile
(``merged_at``) and refusing (409 ``alias_conflict``) an id of another profile known by an
external id. Profiles are read with the workspace key: search by identity or trait, one
profile with its identities, traits and recent events.

The tests share one ``getfluxly serve`` per backend; processing happens in its worker threads,
so they poll (the profile API, or the events table for in-between steps) with a timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, expect_error

WAIT = 20.0  # seconds; processing takes milliseconds, this only bounds a failing test


# -- helpers -----------------------------------------------------------------------------------


def _tag() -> str:
    return uuid.uuid4().hex[:10]


class Clock:
    """Increasing event timestamps, so ``recent_events`` (newest first) has a known order."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC) - timedelta(hours=1)

    def next(self) -> str:
        self.moment += timedelta(seconds=1)
        return self.moment.isoformat()


def _track(clock: Clock, name: str = "page_viewed", **fields: Any) -> dict[str, Any]:
    return {"event": name, "message_id": str(uuid.uuid4()), "timestamp": clock.next(), **fields}


def _identify(clock: Clock, traits: dict[str, Any], **ids: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "traits": traits,
        "message_id": str(uuid.uuid4()),
        "timestamp": clock.next(),
        **ids,
    }


class Project:
    """A project on the shared server with its ingest and read clients."""

    def __init__(self, server: GFServer) -> None:
        self.server = server
        self.gf: GFProject = server.create_project("Identity tests")
        self.ingest = server.client(self.gf.secret_key)
        self.read = server.client()  # the workspace key reads profiles
        self.clock = Clock()

    @property
    def id(self) -> str:
        return self.gf.id

    def send(self, *events: dict[str, Any]) -> list[str]:
        """One batch; all must be accepted. Returns their message_ids."""
        response = self.ingest.post("/v1/events/batch", json={"events": list(events)})
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(events), response.text
        return [e["message_id"] for e in events]

    def alias(self, **body: Any) -> httpx.Response:
        return self.ingest.post("/v1/identify/alias", json=body)

    def search(self, **params: str) -> list[dict[str, Any]]:
        response = self.read.get(f"/v1/projects/{self.id}/profiles", params=params)
        assert response.status_code == 200, response.text
        profiles: list[dict[str, Any]] = response.json()["profiles"]
        return profiles

    def profile(self, profile_id: str) -> dict[str, Any]:
        response = self.read.get(f"/v1/projects/{self.id}/profiles/{profile_id}")
        assert response.status_code == 200, response.text
        profile: dict[str, Any] = response.json()["profile"]
        return profile

    def unprocessed(self) -> int:
        rows = self.server.database.query(
            "SELECT count(*) AS n FROM events WHERE project_id = :p AND processed_at IS NULL",
            p=self.id,
        )
        return int(rows[0]["n"])

    def wait_processed(self) -> None:
        """Until the worker has applied every stored event of the project."""
        _wait(lambda: self.unprocessed() == 0, "every event of the project is processed")

    def wait_for_person(self, identity: str, message_ids: list[str]) -> dict[str, Any]:
        """Poll the profile API until ``identity`` leads to exactly one live profile whose
        recent events are exactly ``message_ids``; that profile."""
        found: dict[str, Any] = {}

        def done() -> bool:
            profiles = self.search(identity=identity)
            if len(profiles) != 1:
                return False
            found.update(self.profile(profiles[0]["id"]))
            recent = sorted(e["message_id"] for e in found["recent_events"])
            return recent == sorted(message_ids)

        _wait(done, f"one profile for {identity!r} with {len(message_ids)} events", found)
        # Read again: on PostgreSQL the profile endpoint's statements each see the latest
        # commit, so the read that first showed every event may show traits from just before.
        return self.profile(found["id"])

    def live_id(self, identity: str) -> str:
        [profile] = self.search(identity=identity)
        return str(profile["id"])


def _wait(condition: Callable[[], bool], what: str, state: Any = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {state!r}")
        time.sleep(0.05)


@pytest.fixture
def project(gf_module_server: GFServer) -> Project:
    return Project(gf_module_server)


def _identities(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["kind"], i["value"]) for i in profile["identities"]}


# -- stitching -----------------------------------------------------------------------------------


def test_a_visitor_who_signs_up_and_returns_on_another_device_is_one_profile(
    project: Project,
) -> None:
    tag = _tag()
    laptop, phone, user = f"laptop-{tag}", f"phone-{tag}", f"user-{tag}"
    clock = project.clock
    sent: list[str] = []
    # Separate requests, as a browser and an app would send them.
    sent += project.send(_track(clock, anonymous_id=laptop))
    sent += project.send(_track(clock, "pricing_viewed", anonymous_id=laptop))
    sent += project.send(
        _identify(
            clock,
            {"email": f"{tag}@example.com", "name": "Ada"},
            anonymous_id=laptop,
            external_id=user,
        )
    )
    project.wait_processed()  # the signed-up profile exists before the phone shows up
    sent += project.send(_track(clock, "app_opened", anonymous_id=phone))
    sent += project.send(_identify(clock, {"plan": "pro"}, anonymous_id=phone, external_id=user))
    sent += project.send(_track(clock, "order_placed", external_id=user))

    person = project.wait_for_person(user, sent)
    assert _identities(person) == {
        ("anonymous_id", laptop),
        ("anonymous_id", phone),
        ("external_id", user),
    }
    assert person["traits"] == {"email": f"{tag}@example.com", "name": "Ada", "plan": "pro"}
    assert person["merged_into"] is None
    # Newest first, by timestamp.
    assert [e["message_id"] for e in person["recent_events"]] == sent[::-1]
    for identity in (laptop, phone, user, person["id"]):
        assert [p["id"] for p in project.search(identity=identity)] == [person["id"]]

    # The phone's anonymous profile was merged into the (older) laptop profile.
    rows = project.server.database.query(
        "SELECT id, merged_into, merged_at FROM profiles WHERE project_id = :p", p=project.id
    )
    [phone_profile] = [r for r in rows if r["id"] != person["id"]]
    assert phone_profile["merged_into"] == person["id"]
    assert phone_profile["merged_at"] is not None
    merged = project.profile(phone_profile["id"])
    assert merged["merged_into"] == person["id"]
    assert merged["identities"] == []
    assert merged["recent_events"] == []


def test_a_later_event_merges_two_profiles_into_the_oldest(project: Project) -> None:
    tag = _tag()
    known, device = f"ext-old-{tag}", f"anon-new-{tag}"
    clock = project.clock
    sent = project.send(
        _identify(clock, {"plan": "free", "name": "Old"}, external_id=known),
        _track(clock, "signed_up", external_id=known),
    )
    project.wait_processed()
    old_id = project.live_id(known)
    sent += project.send(
        _identify(clock, {"plan": "pro", "company": "Acme"}, anonymous_id=device),
        _track(clock, "page_viewed", anonymous_id=device),
    )
    project.wait_processed()
    new_id = project.live_id(device)
    assert new_id != old_id

    sent += project.send(_track(clock, "checkout_started", external_id=known, anonymous_id=device))
    survivor = project.wait_for_person(device, sent)

    assert survivor["id"] == old_id
    # The survivor's own values win; the other profile only fills keys it lacked.
    assert survivor["traits"] == {"plan": "free", "name": "Old", "company": "Acme"}
    assert _identities(survivor) == {("external_id", known), ("anonymous_id", device)}
    loser = project.profile(new_id)
    assert loser["merged_into"] == old_id
    assert loser["recent_events"] == []
    # Merged profiles leave the live set: search finds only the survivor.
    assert [p["id"] for p in project.search(trait="company:Acme")] == [old_id]
    rows = project.server.database.query(
        "SELECT DISTINCT profile_id FROM events WHERE project_id = :p", p=project.id
    )
    assert [r["profile_id"] for r in rows] == [old_id]


PAIRS = 16  # a coin toss per pair would pass all of them once in 65 536 runs


def test_profiles_created_by_one_batch_merge_into_the_one_created_first(
    project: Project,
) -> None:
    """The SDKs send up to 100 events per batch, so two people-to-be-merged are often born in
    the same request; the one created first is still the oldest."""
    tag = _tag()
    clock = project.clock
    first = [f"first-{tag}-{i}" for i in range(PAIRS)]
    second = [f"second-{tag}-{i}" for i in range(PAIRS)]
    born: list[dict[str, Any]] = []
    for i in range(PAIRS):
        born.append(_identify(clock, {"who": "first"}, anonymous_id=first[i]))
        born.append(_identify(clock, {"who": "second"}, external_id=second[i]))
    project.send(*born)
    project.wait_processed()
    firstborn = {i: project.live_id(first[i]) for i in range(PAIRS)}

    project.send(
        *(
            _track(clock, "logged_in", anonymous_id=first[i], external_id=second[i])
            for i in range(PAIRS)
        )
    )
    project.wait_processed()
    wrong = []
    for i in range(PAIRS):
        [survivor] = project.search(identity=first[i])
        if survivor["id"] != firstborn[i] or survivor["traits"] != {"who": "first"}:
            wrong.append(i)
    assert wrong == [], f"{len(wrong)} of {PAIRS} pairs merged into the younger profile"


def test_identify_traits_merge_and_a_profile_applies_its_events_in_order(
    project: Project,
) -> None:
    tag = _tag()
    user = f"ordered-{tag}"
    clock = project.clock
    sent = project.send(_identify(clock, {"plan": "free", "name": "Ada"}, external_id=user))
    sent += project.send(_identify(clock, {"plan": "pro"}, external_id=user))
    sent += project.send(_identify(clock, {"company": "Acme", "name": None}, external_id=user))
    # Many small requests, then one batch: whichever worker thread runs, later wins.
    for step in range(12):
        sent += project.send(_identify(clock, {"step": step}, external_id=user))
    sent += project.send(*(_identify(clock, {"step": s}, external_id=user) for s in range(12, 24)))
    sent += project.send(_track(clock, "order_placed", external_id=user))

    person = project.wait_for_person(user, sent)
    # An identify overwrites the keys it names (an explicit null included) and keeps the rest.
    assert person["traits"] == {"plan": "pro", "name": None, "company": "Acme", "step": 23}
    assert [e["message_id"] for e in person["recent_events"]] == sent[::-1]
    assert [e["type"] for e in person["recent_events"]][:2] == ["track", "identify"]


def test_an_event_naming_a_profile_by_user_id_lands_on_it(project: Project) -> None:
    tag = _tag()
    clock = project.clock
    sent = project.send(_identify(clock, {"name": "Bo"}, external_id=f"bo-{tag}"))
    project.wait_processed()
    profile_id = project.live_id(f"bo-{tag}")
    sent += project.send(_track(clock, "invoice_paid", user_id=profile_id))
    sent += project.send(
        _identify(clock, {"vip": True}, user_id=profile_id, anonymous_id=f"bo-tab-{tag}")
    )
    person = project.wait_for_person(f"bo-{tag}", sent)
    assert person["id"] == profile_id
    assert person["traits"] == {"name": "Bo", "vip": True}
    assert ("anonymous_id", f"bo-tab-{tag}") in _identities(person)


# -- alias ---------------------------------------------------------------------------------------


def test_alias_attaches_an_id_merges_an_anonymous_profile_and_refuses_a_known_one(
    project: Project,
) -> None:
    tag = _tag()
    clock = project.clock
    user, fresh, visitor = f"alias-user-{tag}", f"fresh-{tag}", f"visitor-{tag}"
    other_device, other_user = f"other-dev-{tag}", f"other-user-{tag}"
    sent = project.send(_identify(clock, {"name": "Cy"}, external_id=user))
    project.wait_processed()
    person_id = project.live_id(user)

    # An id nobody has: attached, nothing merged; its events then land on the person.
    response = project.alias(user_id=person_id, anonymous_id=fresh)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "alias": {"user_id": person_id, "anonymous_id": fresh, "merged_at": None}
    }
    sent += project.send(_track(clock, "app_opened", anonymous_id=fresh))
    project.wait_for_person(user, sent)

    # An anonymous-only profile (younger): merged into the person, merged_at says when.
    visitor_events = project.send(
        _track(clock, "page_viewed", anonymous_id=visitor),
        _identify(clock, {"name": "Visitor", "utm": "ad"}, anonymous_id=visitor),
    )
    project.wait_processed()
    visitor_id = project.live_id(visitor)
    response = project.alias(user_id=person_id, anonymous_id=visitor)
    assert response.status_code == 200, response.text
    alias = response.json()["alias"]
    assert (alias["user_id"], alias["anonymous_id"]) == (person_id, visitor)
    merged_at = datetime.fromisoformat(alias["merged_at"])
    assert abs(merged_at - datetime.now(UTC)) < timedelta(minutes=5)
    person = project.wait_for_person(visitor, sent + visitor_events)
    assert person["id"] == person_id
    assert person["traits"] == {"name": "Cy", "utm": "ad"}
    assert project.profile(visitor_id)["merged_into"] == person_id

    # Aliasing an id the person already has changes nothing.
    again = project.alias(user_id=person_id, anonymous_id=visitor)
    assert again.status_code == 200, again.text
    assert again.json()["alias"]["merged_at"] is None

    # Another person known by an external id: refused, and left as it was.
    theirs = project.send(
        _identify(clock, {"name": "Di"}, anonymous_id=other_device, external_id=other_user)
    )
    project.wait_processed()
    other_id = project.live_id(other_user)
    for body in ({"anonymous_id": other_device}, {"previous_id": other_user}):
        detail = expect_error(project.alias(user_id=person_id, **body), 409, "alias_conflict")
        assert detail
    other = project.wait_for_person(other_device, theirs)
    assert other["id"] == other_id
    assert _identities(other) == {("anonymous_id", other_device), ("external_id", other_user)}
    assert other["traits"] == {"name": "Di"}
    assert _identities(project.profile(person_id)) == {
        ("external_id", user),
        ("anonymous_id", fresh),
        ("anonymous_id", visitor),
    }

    # A previous external id nobody has: attached, and its events land on the person.
    response = project.alias(user_id=person_id, previous_id=f"old-login-{tag}")
    assert response.status_code == 200, response.text
    assert response.json()["alias"]["previous_id"] == f"old-login-{tag}"
    sent += visitor_events
    sent += project.send(_track(clock, "legacy_event", external_id=f"old-login-{tag}"))
    assert project.wait_for_person(f"old-login-{tag}", sent)["id"] == person_id


def test_alias_refuses_bad_requests(project: Project) -> None:
    expect_error(
        project.alias(user_id="prf_00000000000000000000", anonymous_id="x"), 404, "not_found"
    )
    for body in (
        {"anonymous_id": "x"},
        {"user_id": "prf_x"},
        {"user_id": "prf_x", "anonymous_id": "a", "previous_id": "b"},
        {"user_id": 7, "anonymous_id": "a"},
    ):
        expect_error(project.alias(**body), 400, "validation_error")
    response = project.ingest.post("/v1/identify/alias", json=["user_id"])
    expect_error(response, 400, "validation_error")


# -- reading profiles ----------------------------------------------------------------------------


def test_profiles_are_found_by_any_identity_and_by_trait(project: Project) -> None:
    tag = _tag()
    clock = project.clock
    project.send(
        _identify(clock, {"plan": f"pro-{tag}", "city": "Oslo"}, external_id=f"a-{tag}"),
        _identify(clock, {"plan": f"pro-{tag}"}, anonymous_id=f"b-{tag}"),
        _identify(clock, {"plan": f"free-{tag}"}, anonymous_id=f"c-{tag}"),
    )
    project.wait_processed()
    a, b, c = (project.live_id(f"{x}-{tag}") for x in "abc")
    assert len({a, b, c}) == 3

    def ids(**params: str) -> set[str]:
        return {p["id"] for p in project.search(**params)}

    assert ids(identity=a) == {a}  # the profile id itself
    assert ids(identity=f"nobody-{tag}") == set()
    assert ids(trait=f"plan:pro-{tag}") == {a, b}
    assert ids(trait=f"plan:free-{tag}") == {c}
    assert ids(trait=f"plan:pro-{tag}", identity=f"b-{tag}") == {b}
    assert ids(trait=f"plan:pro-{tag}", identity=f"c-{tag}") == set()
    [found] = project.search(identity=f"a-{tag}")
    assert found["traits"] == {"plan": f"pro-{tag}", "city": "Oslo"}
    assert set(found) >= {"id", "traits", "created_at", "updated_at", "merged_into"}
    expect_error(
        project.read.get(f"/v1/projects/{project.id}/profiles", params={"trait": "no-colon"}),
        400,
        "validation_error",
    )
    expect_error(
        project.read.get(f"/v1/projects/{project.id}/profiles/prf_00000000000000000000"),
        404,
        "not_found",
    )


def test_a_number_or_boolean_trait_is_found_by_its_text(project: Project) -> None:
    """``?trait=KEY:VALUE`` compares the trait's value as text, on either database."""
    tag = _tag()
    project.send(_identify(project.clock, {"seats": 42, "beta": True}, external_id=f"n-{tag}"))
    project.wait_processed()
    person = project.live_id(f"n-{tag}")
    assert [p["id"] for p in project.search(trait="seats:42", identity=f"n-{tag}")] == [person]
    assert [p["id"] for p in project.search(trait="beta:true", identity=f"n-{tag}")] == [person]
