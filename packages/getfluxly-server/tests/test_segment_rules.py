"""Segment rules: the JSON grammar (valid rules parse; each fault is refused with its JSON
path) and every condition evaluated by the database, on SQLite and PostgreSQL, both as a
member list (``member_ids``) and for one profile (``matches``), which must always agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from flux_testkit import ledger
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.segments import rules
from getfluxly_server.domain.segments.durations import parse_duration
from getfluxly_server.domain.segments.model import (
    All,
    AnyOf,
    Condition,
    CountOp,
    Email,
    EmailActivity,
    Not,
    Op,
    Performed,
    Subscribed,
    Trait,
)
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Event,
    Message,
    MessageEvent,
    Profile,
    Subscription,
    Suppression,
    new_id,
)

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


# -- grammar -----------------------------------------------------------------------------------


def test_a_rule_of_every_kind_parses_to_its_typed_value() -> None:
    rule = rules.parse(
        {
            "all": [
                {"trait": "plan", "op": "eq", "value": "pro"},
                {
                    "any": [
                        {"trait": "age", "op": "gte", "value": 18},
                        {"not": {"trait": "x", "op": "exists"}},
                    ]
                },
                {
                    "event": "login",
                    "where": [{"property": "device", "op": "in", "value": ["ios", "android"]}],
                    "count": {"gte": 3},
                    "within": "P7D",
                },
                {"email": "opened", "within": "PT12H", "broadcast_id": "brd_1"},
                {"subscribed": True, "group": "newsletter"},
                {"trait": "signed_up_at", "op": "within_last", "value": "P1W"},
            ]
        }
    )
    assert rule == All(
        (
            Trait(Condition("plan", Op.EQ, "pro")),
            AnyOf((Trait(Condition("age", Op.GTE, 18)), Not(Trait(Condition("x", Op.EXISTS))))),
            Performed(
                "login",
                (Condition("device", Op.IN, ("ios", "android")),),
                CountOp.GTE,
                3,
                timedelta(days=7),
            ),
            Email(EmailActivity.OPENED, timedelta(hours=12), None, "brd_1"),
            Subscribed(True, "newsletter"),
            Trait(Condition("signed_up_at", Op.WITHIN_LAST, timedelta(weeks=1))),
        )
    )
    assert rules.parse({"event": "signed_up"}) == Performed("signed_up")
    reads = rules.reads(rule)
    assert reads.events == {"login"}
    assert reads.traits == {"plan", "age", "x", "email", "signed_up_at"}
    assert reads.timed
    assert reads.email
    assert reads.subscriptions


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ([], "rule", "JSON object"),
        ({}, "rule", "exactly one of"),
        ({"trait": "a", "event": "b"}, "rule", "found trait and event"),
        ({"all": []}, "rule.all", "non-empty list"),
        (
            {"all": [{"trait": "a", "op": "eq", "value": 1}, {"trait": "b", "op": "eq"}]},
            "rule.all[1].value",
            "required for eq",
        ),
        (
            {"any": [{"not": {"trait": "a", "op": "bogus", "value": 1}}]},
            "rule.any[0].not.op",
            "must be one of",
        ),
        ({"trait": "", "op": "eq", "value": 1}, "rule.trait", "non-empty"),
        ({"trait": 'a"b', "op": "eq", "value": 1}, "rule.trait", "quotes"),
        ({"trait": "a", "op": "eq", "value": None}, "rule.value", "exists"),
        ({"trait": "a", "op": "eq", "value": {"x": 1}}, "rule.value", "text, a number"),
        ({"trait": "a", "op": "gt", "value": True}, "rule.value", "not true/false"),
        ({"trait": "a", "op": "in", "value": []}, "rule.value", "non-empty list"),
        ({"trait": "a", "op": "in", "value": [1, [2]]}, "rule.value[1]", "text, a number"),
        ({"trait": "a", "op": "exists", "value": 1}, "rule.value", "takes no value"),
        ({"trait": "a", "op": "within_last", "value": "P1M"}, "rule.value", "P30D"),
        ({"trait": "a", "op": "within_last", "value": "3 days"}, "rule.value", "ISO 8601"),
        ({"trait": "a", "op": "before_last", "value": "PT0S"}, "rule.value", "positive"),
        ({"trait": "a", "op": "eq", "value": 1, "extra": 2}, "rule.extra", "not a field"),
        ({"event": "e", "count": {"gte": -1}}, "rule.count.gte", "whole number"),
        ({"event": "e", "count": {"gte": 1, "lte": 3}}, "rule.count", "one of gte"),
        ({"event": "e", "count": {"most": 1}}, "rule.count.most", "not a count"),
        ({"event": "e", "within": "P"}, "rule.within", "ISO 8601"),
        ({"event": "e", "where": {"property": "a"}}, "rule.where", "list"),
        (
            {"event": "e", "where": [{"property": "a", "op": "within_last", "value": "P1D"}]},
            "rule.where[0].op",
            "must be one of",
        ),
        ({"event": "e", "where": [{"op": "eq", "value": 1}]}, "rule.where[0].property", "required"),
        ({"event": "x" * 65}, "rule.event", "at most 64"),
        ({"email": "read"}, "rule.email", "must be one of"),
        ({"email": "sent", "automation_id": "brd_1"}, "rule.automation_id", "aut_"),
        ({"subscribed": "yes"}, "rule.subscribed", "true or false"),
        ({"trait": "a", "op": "eq", "value": "x\x00y"}, "rule.value", "NUL"),
        ({"email": "sent", "broadcast_id": "brd_\x00"}, "rule.broadcast_id", "brd_"),
        ({"subscribed": True, "group": 3}, "rule.group", "non-empty name"),
    ],
)
def test_an_invalid_rule_names_the_json_path_of_its_fault(
    rule: Any, field: str, words: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        rules.parse(rule)
    assert caught.value.code == "validation_error"
    assert caught.value.extra["field"] == field
    assert caught.value.detail.startswith(f"{field}: ")
    assert words in caught.value.detail


def test_a_rule_too_deep_or_too_large_is_refused() -> None:
    deep: dict[str, Any] = {"trait": "a", "op": "exists"}
    for _ in range(rules.MAX_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(ValidationFailed, match="nest at most"):
        rules.parse(deep)
    wide = {"any": [{"trait": "a", "op": "exists"}] * rules.MAX_RULES}
    with pytest.raises(ValidationFailed, match="at most 200 rules"):
        rules.parse(wide)


def test_a_parse_at_another_path_reports_that_path() -> None:
    with pytest.raises(ValidationFailed) as caught:
        rules.parse({"not": {}}, path="steps[2].rule")
    assert caught.value.extra["field"] == "steps[2].rule.not"


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("PT15M", timedelta(minutes=15)),
        ("P3D", timedelta(days=3)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT1.5S", timedelta(seconds=1.5)),
    ],
)
def test_durations(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


# -- evaluation --------------------------------------------------------------------------------


class World:
    """A project with named profiles, and the evaluation of rules over them."""

    def __init__(self, db: Database, workspace_id: str) -> None:
        self.db = db
        self.project_id = ledger.make_project(db, workspace_id)
        self.names: dict[str, str] = {}

    def profile(self, name: str, /, **traits: Any) -> str:
        self.names[name] = ledger.add_profile(self.db, self.project_id, traits)
        return self.names[name]

    def event(self, name: str, event: str, at: datetime, /, **properties: Any) -> None:
        with self.db.transaction() as session:
            session.add(
                Event(
                    project_id=self.project_id, message_id=new_id("evt"), type="track",
                    name=event, properties=properties, timestamp=at, received_at=at,
                    profile_id=self.names[name], processed_at=at,
                )
            )  # fmt: skip

    def members(self, rule: Any, now: datetime = NOW) -> set[str]:
        parsed = rules.parse(rule)
        ids = {v: k for k, v in self.names.items()}
        with self.db.transaction() as session:
            found = {
                ids[i]
                for i in session.scalars(rules.member_ids(session, self.project_id, parsed, now))
            }
            one_by_one = {
                name for name, pid in self.names.items()
                if rules.matches(session, self.project_id, pid, parsed, now)
            }  # fmt: skip
            some = sorted(self.names.values())[:2]
            among = {
                ids[i]
                for i in session.scalars(
                    rules.member_ids(session, self.project_id, parsed, now, among=some)
                )
            }
        assert found == one_by_one, "member_ids and matches disagree"
        assert among == found & {ids[i] for i in some}, "among narrows, never changes, the answer"
        return found


@pytest.fixture
def world(gf_db: Database, gf_database: GFDatabase) -> World:
    return World(gf_db, gf_database.workspace.id)


def test_trait_operators(world: World) -> None:
    world.profile(
        "ada", plan="pro", age=36, vip=True, tags=["a", "b", 3], bio="likes maths", nick="Ada"
    )
    world.profile("bob", plan="free", age=17, vip=False, tags=[], bio=None, nick="Bob")
    world.profile("cy", plan="36", age="36", nick="cy")
    world.profile("dee")

    def m(op: str, key: str, value: Any = None) -> set[str]:
        rule: dict[str, Any] = {"trait": key, "op": op}
        if op not in ("exists", "not_exists"):
            rule["value"] = value
        return world.members(rule)

    assert m("eq", "plan", "pro") == {"ada"}
    assert m("eq", "age", 36) == {"ada"}, "typed: the text '36' is not the number 36"
    assert m("eq", "age", 36.0) == {"ada"}
    assert m("eq", "vip", True) == {"ada"}
    assert m("eq", "vip", False) == {"bob"}
    assert m("neq", "plan", "pro") == {"bob", "cy", "dee"}, "neq is not eq, missing included"
    assert m("gt", "age", 17) == {"ada"}
    assert m("gte", "age", 17) == {"ada", "bob"}
    assert m("lt", "age", 36) == {"bob"}
    assert m("lte", "age", 36) == {"ada", "bob"}
    assert m("gt", "nick", "B") == {"bob", "cy"}, "code point order: lower case after upper"
    assert m("contains", "bio", "math") == {"ada"}
    assert m("contains", "bio", "Math") == set(), "case-sensitive"
    assert m("contains", "tags", "b") == {"ada"}
    assert m("contains", "tags", 3) == {"ada"}
    assert m("contains", "tags", "3") == set()
    assert m("in", "plan", ["free", "pro"]) == {"ada", "bob"}
    assert m("in", "age", [17, "36"]) == {"bob", "cy"}
    assert m("exists", "bio") == {"ada"}, "null is not there"
    assert m("not_exists", "bio") == {"bob", "cy", "dee"}
    assert world.members({"not": {"trait": "age", "op": "gt", "value": 17}}) == {"bob", "cy", "dee"}


def test_date_traits_within_and_before_last(world: World) -> None:
    world.profile("recent", seen="2026-12-02T12:00:00Z")
    world.profile("offset", seen="2026-12-03T10:30:00+02:00")  # 08:30 UTC
    world.profile("old", seen="2026-11-01")
    world.profile("future", seen="2026-12-10T00:00:00Z")
    world.profile("bad", seen="2026-02-30T00:00:00Z")
    world.profile("junk", seen="yesterday")
    world.profile("number", seen=20261202)
    assert world.members({"trait": "seen", "op": "within_last", "value": "P2D"}) == {
        "recent",
        "offset",
    }
    assert world.members({"trait": "seen", "op": "within_last", "value": "PT4H"}) == {"offset"}
    assert world.members({"trait": "seen", "op": "before_last", "value": "P7D"}) == {"old"}
    later = NOW + timedelta(days=40)
    assert world.members({"trait": "seen", "op": "before_last", "value": "P7D"}, later) == {
        "recent", "offset", "old", "future",
    }  # fmt: skip


def test_event_rules_count_within_and_where(world: World) -> None:
    for name in ("ada", "bob", "cy", "dee"):
        world.profile(name)
    day = timedelta(days=1)
    for offset in (1, 2, 3):
        world.event("ada", "login", NOW - offset * day, device="ios")
    world.event("bob", "login", NOW - day, device="web")
    world.event("bob", "login", NOW - 10 * day, device="ios")
    world.event("cy", "signed_up", NOW - day, plan="pro", seats=5)

    assert world.members({"event": "login"}) == {"ada", "bob"}
    assert world.members({"event": "login", "count": {"gte": 3}}) == {"ada"}
    assert world.members({"event": "login", "count": {"gte": 2}, "within": "P7D"}) == {"ada"}
    assert world.members({"event": "login", "count": {"eq": 2}}) == {"bob"}
    assert world.members({"event": "login", "count": {"eq": 0}}) == {"cy", "dee"}
    assert world.members({"event": "login", "count": {"lte": 1}, "within": "P7D"}) == {
        "bob",
        "cy",
        "dee",
    }
    assert world.members({"event": "login", "count": {"gte": 0}}) == {"ada", "bob", "cy", "dee"}
    assert world.members(
        {"event": "login", "where": [{"property": "device", "op": "eq", "value": "ios"}]}
    ) == {"ada", "bob"}
    assert world.members(
        {
            "event": "login",
            "within": "P2D",
            "where": [{"property": "device", "op": "eq", "value": "ios"}],
        }
    ) == {"ada"}
    assert world.members(
        {
            "event": "signed_up",
            "where": [
                {"property": "seats", "op": "gt", "value": 4},
                {"property": "plan", "op": "exists"},
            ],
        }
    ) == {"cy"}
    assert world.members({"not": {"event": "login", "within": "P7D"}}) == {"cy", "dee"}
    assert (
        world.members({"event": "login", "count": {"gte": 3}, "within": "P7D"}, NOW + 5 * day)
        == set()
    )


def test_merged_and_erased_profiles_are_never_members(world: World) -> None:
    world.profile("ada", plan="pro")
    merged = world.profile("old", plan="pro")
    erased = world.profile("gone", plan="pro")
    with world.db.transaction() as session:
        session.get(Profile, merged).merged_into = world.names["ada"]  # type: ignore[union-attr]
        session.get(Profile, erased).erased_at = NOW  # type: ignore[union-attr]
    assert world.members({"trait": "plan", "op": "eq", "value": "pro"}) == {"ada"}


def test_email_rules(world: World) -> None:
    for name in ("ada", "bob", "cy", "dee"):
        world.profile(name, email=f"{name}@example.com")
    day = timedelta(days=1)

    def message(name: str, status: str, sent: datetime | None, **origin: str) -> str:
        mid = new_id("msg")
        with world.db.transaction() as session:
            session.add(
                Message(
                    id=mid,
                    project_id=world.project_id,
                    status=status,
                    to_email=f"{name}@example.com",
                    profile_id=world.names[name],
                    sent_at=sent,
                    **origin,
                )
            )
        return mid

    def feedback(
        name: str, mid: str | None, kind: str, at: datetime, machine: bool = False
    ) -> None:
        with world.db.transaction() as session:
            session.add(
                MessageEvent(
                    project_id=world.project_id,
                    message_id=mid,
                    profile_id=world.names[name],
                    email=f"{name}@example.com",
                    type=kind,
                    source="tracking",
                    machine=machine,
                    occurred_at=at,
                )
            )

    a = message("ada", "opened", NOW - day, broadcast_id="brd_x")
    feedback("ada", a, "opened", NOW - day)
    message("bob", "queued", None)
    b = message("bob", "sent", NOW - 5 * day, automation_id="aut_y")
    feedback("bob", b, "opened", NOW - 5 * day, machine=True)
    feedback("bob", b, "clicked", NOW - 5 * day)
    c = message("cy", "bounced", NOW - day)
    feedback("cy", c, "bounced", NOW - day)
    feedback("dee", None, "complained", NOW - day)  # joined to no message: still dee's

    assert world.members({"email": "sent"}) == {"ada", "bob", "cy"}
    assert world.members({"email": "sent", "within": "P2D"}) == {"ada", "cy"}
    assert world.members({"email": "sent", "broadcast_id": "brd_x"}) == {"ada"}
    assert world.members({"email": "sent", "automation_id": "aut_y"}) == {"bob"}
    assert world.members({"email": "opened"}) == {"ada"}, "machine opens are not opens"
    assert world.members({"email": "clicked", "within": "P7D"}) == {"bob"}
    assert world.members({"email": "clicked", "within": "P1D"}) == set()
    assert world.members({"email": "bounced"}) == {"cy"}
    assert world.members({"email": "complained"}) == {"dee"}
    assert world.members({"email": "delivered"}) == set()

    # eve merged into fay: her messages are fay's now, her feedback rows still name eve.
    world.profile("eve", email="eve@example.com")
    fay = world.profile("fay", email="fay@example.com")
    e = message("eve", "sent", NOW - day)
    feedback("eve", e, "clicked", NOW - day)
    assert world.members({"email": "clicked", "within": "P2D"}) == {"eve"}
    with world.db.transaction() as session:
        session.get(Message, e).profile_id = fay  # type: ignore[union-attr]
        session.get(Profile, world.names["eve"]).merged_into = fay  # type: ignore[union-attr]
    assert world.members({"email": "clicked", "within": "P2D"}) == {"fay"}
    assert world.members({"email": "clicked"}) == {"bob", "fay"}


def test_subscription_rules(world: World) -> None:
    world.profile("ada", email="Ada@Example.com")
    world.profile("bob", email="bob@example.com")
    world.profile("cy", email="cy@example.com")
    world.profile("anon")
    with world.db.transaction() as session:
        session.add(
            Suppression(project_id=world.project_id, email="ada@example.com", reason="unsubscribed")
        )
        session.add(
            Suppression(project_id=world.project_id, email="cy@example.com", reason="hard_bounce")
        )
        session.add(
            Subscription(
                project_id=world.project_id,
                email="bob@example.com",
                group_name="news",
                subscribed=False,
            )
        )
        session.add(
            Subscription(
                project_id=world.project_id,
                email="cy@example.com",
                group_name="news",
                subscribed=True,
            )
        )
    assert world.members({"subscribed": True}) == {"bob", "cy"}, "a bounce is not an unsubscribe"
    assert world.members({"subscribed": False}) == {"ada"}
    assert world.members({"subscribed": True, "group": "news"}) == {"cy"}
    assert world.members({"subscribed": False, "group": "news"}) == {"ada", "bob"}
    assert world.members({"not": {"subscribed": True}}) == {"ada", "anon"}
