"""Segment membership kept current, in-process against the real database (SQLite and
PostgreSQL): the event consumer as events are stitched, the periodic pass as time moves
(a ManualClock), the full computation of a new or edited segment, merges and erasures; and
every entry and exit recorded in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from flux_testkit import ledger
from getfluxly_server.domain import identity, ingest
from getfluxly_server.domain.clock import ManualClock
from getfluxly_server.domain.segments import membership, rules
from getfluxly_server.storage import events as event_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Profile,
    Segment,
    SegmentMember,
    SegmentTransition,
    Suppression,
    new_id,
)

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LOGINS = {"event": "login", "count": {"gte": 3}, "within": "P7D"}


class Engine:
    """A project, a manual clock, and the segment machinery driven in this thread."""

    def __init__(self, db: Database, workspace_id: str) -> None:
        self.db = db
        self.project_id = ledger.make_project(db, workspace_id)
        self.clock = ManualClock(T0)
        self.cache = membership.RuleCache()
        self.consumer = membership.SegmentConsumer(self.clock, self.cache)
        self.runner = membership.SegmentRunner(db, self.clock, cache=self.cache)
        self.runner.run_once()  # the first pass after a start: nothing to do yet

    def segment(self, rule: Any, name: str | None = None) -> str:
        rules.parse(rule)
        with self.db.transaction() as session:
            row = Segment(
                id=new_id("seg"), project_id=self.project_id, name=name or new_id("n"), rule=rule
            )
            session.add(row)
        membership.compute(self.db, self.clock, row.id, self.cache)
        return row.id

    def send(self, *events: dict[str, Any]) -> None:
        """Events as the API stores them, then processed as the worker does."""
        rows = [ingest.validate(e, self.project_id, self.clock.now()) for e in events]
        with self.db.transaction() as session:
            event_store.insert_events(session, rows)
        identity.process_project(self.db, self.project_id, [self.consumer])

    def login(self, user: str, at: datetime | None = None, n: int = 1) -> None:
        stamp = (at or self.clock.now()).isoformat()
        self.send(*({"event": "login", "external_id": user, "timestamp": stamp} for _ in range(n)))

    def profile_id(self, user: str) -> str:
        with self.db.read() as session:
            [found] = event_store.identities_for(session, self.project_id, [("external_id", user)])
            return found.profile_id

    def members(self, segment_id: str) -> set[str]:
        with self.db.read() as session:
            ids = session.scalars(
                select(SegmentMember.profile_id).where(SegmentMember.segment_id == segment_id)
            )
            return set(ids)

    def users(self, segment_id: str) -> set[str]:
        names = {self.profile_id(u): u for u in self._users()}
        return {names.get(p, p) for p in self.members(segment_id)}

    def _users(self) -> list[str]:
        with self.db.read() as session:
            from getfluxly_server.storage.models import Identity

            rows = session.scalars(
                select(Identity.value).where(
                    Identity.project_id == self.project_id, Identity.kind == "external_id"
                )
            )
            return list(rows)

    def transitions(self, segment_id: str) -> list[tuple[str, str]]:
        names = {self.profile_id(u): u for u in self._users()}
        with self.db.read() as session:
            rows = session.execute(
                select(SegmentTransition.profile_id, SegmentTransition.kind)
                .where(SegmentTransition.segment_id == segment_id)
                .order_by(SegmentTransition.id)
            )
            return [(names.get(p, p), k) for p, k in rows]

    def advance(self, by: timedelta) -> dict[str, int]:
        self.clock.advance(by)
        return self.runner.run_once()


@pytest.fixture
def engine(gf_db: Database, gf_database: GFDatabase) -> Engine:
    return Engine(gf_db, gf_database.workspace.id)


def test_three_logins_within_seven_days_enter_and_time_makes_them_leave(engine: Engine) -> None:
    seg = engine.segment(LOGINS)
    engine.login("ada", T0, n=2)
    assert engine.users(seg) == set(), "two logins are not three"
    engine.clock.advance(DAY)
    engine.login("ada")  # the third, a day later: in at once, no pass needed
    assert engine.users(seg) == {"ada"}
    engine.clock.advance(DAY)
    engine.login("bob", n=3)
    assert engine.users(seg) == {"ada", "bob"}
    assert engine.transitions(seg) == [("ada", "entered"), ("bob", "entered")]

    # Time alone: ada's first two logins (T0) leave the window after T0 + 7 days.
    assert engine.advance(7 * DAY - 2 * DAY - timedelta(minutes=1)) == {"entered": 0, "left": 0}
    assert engine.users(seg) == {"ada", "bob"}
    assert engine.advance(timedelta(minutes=2)) == {"entered": 0, "left": 1}
    assert engine.users(seg) == {"bob"}
    # ada logs in again: her T0+1d login and two new ones are three within seven days.
    engine.login("ada", n=2)
    assert engine.users(seg) == {"ada", "bob"}
    engine.advance(3 * DAY)  # bob's three (T0+2d) age out; ada's T0+1d one too
    assert engine.users(seg) == set()
    recorded = engine.transitions(seg)
    assert recorded[:4] == [
        ("ada", "entered"),
        ("bob", "entered"),
        ("ada", "left"),
        ("ada", "entered"),
    ]
    # Exits of one pass are recorded in profile id order.
    assert sorted(recorded[4:]) == [("ada", "left"), ("bob", "left")]
    with engine.db.read() as session:
        parsed = rules.parse(LOGINS)
        assert not rules.matches(
            session, engine.project_id, engine.profile_id("ada"), parsed, engine.clock.now()
        )


def test_a_new_segment_is_computed_in_full_and_an_edit_recomputes_it(engine: Engine) -> None:
    engine.login("ada", n=3)
    engine.login("bob", n=1)
    seg = engine.segment(LOGINS)
    assert engine.users(seg) == {"ada"}
    with engine.db.transaction() as session:
        row = session.get(Segment, seg)
        assert row is not None
        row.rule, row.version = {"event": "login"}, 2
    membership.compute(engine.db, engine.clock, seg, engine.cache)
    assert engine.users(seg) == {"ada", "bob"}
    assert engine.transitions(seg) == [("ada", "entered"), ("bob", "entered")]
    membership.compute(engine.db, engine.clock, seg, engine.cache)
    assert len(engine.transitions(seg)) == 2, "computing again changes nothing"


def test_only_the_segments_an_event_can_change_are_evaluated(engine: Engine) -> None:
    logins = engine.segment({"event": "login"})
    purchases = engine.segment({"event": "purchase"})
    plans = engine.segment({"trait": "plan", "op": "eq", "value": "pro"})
    engine.login("ada")
    ada = engine.profile_id("ada")
    # Made stale on purpose: if a login chunk evaluated these segments, ada would leave them.
    with engine.db.transaction() as session:
        session.add(SegmentMember(segment_id=purchases, profile_id=ada))
        session.add(SegmentMember(segment_id=plans, profile_id=ada))
    engine.login("ada")
    assert engine.members(purchases) == {ada}
    assert engine.members(plans) == {ada}
    assert engine.members(logins) == {ada}
    engine.send({"type": "identify", "external_id": "ada", "traits": {"plan": "free"}})
    assert engine.members(plans) == set(), "an identify setting plan re-evaluates it"
    assert engine.members(purchases) == {ada}
    engine.send({"event": "purchase", "external_id": "ada"})
    assert engine.members(purchases) == {ada}


def test_a_new_profile_enters_a_segment_of_absence(engine: Engine) -> None:
    never_bought = engine.segment({"not": {"event": "purchase"}})
    engine.login("ada")
    assert engine.users(never_bought) == {"ada"}
    engine.send({"event": "purchase", "external_id": "ada"})
    assert engine.users(never_bought) == set()


def test_merged_profiles_leave_and_the_survivor_is_evaluated(engine: Engine) -> None:
    twice = engine.segment({"event": "login", "count": {"gte": 2}})
    once = engine.segment({"event": "login"})
    engine.send({"event": "login", "anonymous_id": "device-1"})  # the older profile
    engine.login("ada")
    ada = engine.profile_id("ada")
    with engine.db.read() as session:
        query = select(Profile.id).where(Profile.project_id == engine.project_id, Profile.id != ada)
        device = session.scalars(query).one()
    assert engine.members(once) == {device, ada}
    assert engine.members(twice) == set()
    # One event naming both ids merges them into the older (the device's): it has both
    # logins now, and ada's profile, merged, leaves.
    engine.send({"event": "page", "anonymous_id": "device-1", "external_id": "ada"})
    assert engine.profile_id("ada") == device
    assert engine.members(once) == {device}
    assert engine.members(twice) == {device}
    # (transitions name profiles by external id: "ada" is the device's profile now)
    assert engine.transitions(once)[-1:] == [(ada, "left")]
    assert engine.transitions(twice) == [("ada", "entered")]


def test_the_pass_removes_erased_profiles_and_sees_unsubscribes(engine: Engine) -> None:
    subscribed = engine.segment({"subscribed": True})
    engine.send({"type": "identify", "external_id": "ada", "traits": {"email": "ada@example.com"}})
    engine.send({"type": "identify", "external_id": "bob", "traits": {"email": "bob@example.com"}})
    assert engine.users(subscribed) == {"ada", "bob"}
    with engine.db.transaction() as session:
        session.add(
            Suppression(
                project_id=engine.project_id, email="bob@example.com", reason="unsubscribed"
            )
        )
        erased = session.get(Profile, engine.profile_id("ada"))
        assert erased is not None
        erased.erased_at = engine.clock.now()
    assert engine.advance(timedelta(seconds=1)) == {"entered": 0, "left": 2}
    assert engine.users(subscribed) == set()


def test_a_profile_changed_outside_events_is_seen_by_the_next_pass(engine: Engine) -> None:
    pros = engine.segment({"trait": "plan", "op": "eq", "value": "pro"})
    engine.login("ada")
    with engine.db.transaction() as session:
        row = session.get(Profile, engine.profile_id("ada"))
        assert row is not None
        row.traits, row.updated_at = {"plan": "pro"}, datetime.now(UTC)
    engine.advance(timedelta(seconds=1))
    assert engine.users(pros) == {"ada"}


def test_time_alone_brings_a_profile_into_an_at_most_segment(engine: Engine) -> None:
    quiet = engine.segment({"event": "login", "count": {"lte": 1}, "within": "P1D"})
    engine.login("ada", n=2)
    assert engine.users(quiet) == set()
    engine.advance(timedelta(hours=1))  # the project's first pass: every segment in full
    assert engine.users(quiet) == set()
    # Later passes look only at profiles whose events left a window since the last one.
    assert engine.advance(DAY) == {"entered": 1, "left": 0}
    assert engine.users(quiet) == {"ada"}
    assert engine.transitions(quiet) == [("ada", "entered")]


def test_profiles_changed_outside_events_are_evaluated_in_bounded_chunks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pros = engine.segment({"trait": "plan", "op": "eq", "value": "pro"})
    for user in ("ada", "bob", "cy"):
        engine.login(user)
    ids = [engine.profile_id(u) for u in ("ada", "bob", "cy")]
    with engine.db.transaction() as session:
        for pid in ids[:2]:
            row = session.get(Profile, pid)
            assert row is not None
            row.traits = {"plan": "pro"}  # as an automation's update_traits step would
    monkeypatch.setattr(membership, "REFRESH_CHUNK", 1)
    with engine.db.transaction() as session:
        changed = membership.profiles_changed(session, engine.project_id, ids, engine.clock.now())
    assert changed == (2, 0)
    assert engine.users(pros) == {"ada", "bob"}
