"""Mail activity and subscription state move segment members at once, on SQLite and
PostgreSQL (issue 14: segments "evaluated incrementally as events and traits arrive").

Contract (engine spec sections 3, 6 and 7): feedback recorded through its one path
(``domain.feedback.record``: the tracking links' opens and clicks, a relay's bounce, a
one-click unsubscribe) is seen by the segments whose rules read it (``{"email": "clicked"}``,
``{"subscribed": false}``, ...) as soon as the project's event processing has run after it,
for the message's profile, with exactly one entry or exit recorded; the periodic segment
pass is never run here, so it cannot be what moved anyone. Segments that read nothing the
feedback reports are not evaluated. Every event consumer sees each ``email_*`` event once
(automations' triggers and ``exit_on`` read the same events). A change of subscription
state moves every profile with the address (two may share one; a message sent to an address
alone has no profile event) through the ``segments.addresses`` job it queues: an
unsubscribe, a return to the list on the preference page, the suppressions API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flux_testkit import audience, ledger
from flux_testkit.gfserver import GFDatabase
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import identity, suppressions
from getfluxly_server.domain.automations import manage as automations
from getfluxly_server.domain.automations import triggers
from getfluxly_server.domain.clock import ManualClock
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.domain.segments import membership, rules
from getfluxly_server.domain.segments.addresses import ADDRESSES_JOB
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.domain.tracking import engagement, preferences
from getfluxly_server.domain.tracking.machines import Hit
from getfluxly_server.domain.tracking.preferences import GroupDefinition
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    AutomationRun,
    Event,
    Job,
    Message,
    MessageEventType,
    Segment,
    new_id,
)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HOUR = timedelta(hours=1)


class Recorder:
    """An event consumer that keeps the names of the events it is handed."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, session: Session, project_id: str, events: Sequence[Event]) -> None:
        self.names += [e.name or "" for e in events]


class Feedback:
    """A project with one profile mailed once, its segments, and the worker's event
    processing with the segment consumer (no periodic pass, ever)."""

    def __init__(self, db: Database, workspace_id: str) -> None:
        self.db = db
        self.project_id = ledger.make_project(db, workspace_id)
        self.clock = ManualClock(datetime.now(UTC))
        self.cache = membership.RuleCache()
        self.recorder = Recorder()
        self.consumers = [membership.SegmentConsumer(self.clock, self.cache), self.recorder]
        self.profile_id = ledger.add_profile(
            db, self.project_id, {"email": "ada@example.com", "first_name": "Ada"}
        )
        self.message_id = self.mail(self.profile_id, "ada@example.com")
        self._jobs_seen = 0
        self.owner = Principal("key", "workspace", workspace_id, None)

    def mail(self, profile_id: str | None, email: str, group: str | None = None) -> str:
        """A marketing message as the delivery workers leave it once the relay took it."""
        keyring = Keyring.parse(Keyring.generate())
        provider = ledger.add_provider(
            self.db, keyring, self.project_id, ledger.smtp_body("127.0.0.1", 25)
        )
        [message_id] = ledger.queue_messages(
            self.db, self.project_id, provider, [email], profile_id=profile_id
        )
        with self.db.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="sent", sent_at=self.clock.now() - HOUR, due_at=None,
                        transactional=False, subscription_group=group)
            )  # fmt: skip
        return message_id

    def segment(self, rule: Any) -> str:
        rules.parse(rule)
        with self.db.transaction() as session:
            row = Segment(id=new_id("seg"), project_id=self.project_id, name=new_id("n"),
                          rule=rule)  # fmt: skip
            session.add(row)
        membership.compute(self.db, self.clock, row.id, self.cache)
        return row.id

    def hit(self) -> Hit:
        return Hit("GET", BROWSER, "203.0.113.9", self.clock.now())

    def process(self) -> int:
        """What the ``events.process`` job that ``record`` queued does."""
        return identity.process_project(self.db, self.project_id, self.consumers)

    def address_jobs(self) -> list[dict[str, int]]:
        """Run the ``segments.addresses`` jobs queued since the last call, as a worker does
        (the feature's own handler); what each did."""
        [handler] = [
            h
            for h in membership.handlers(self.db, self.clock, self.cache)
            if h.kind.name == ADDRESSES_JOB
        ]
        with self.db.read() as session:
            payloads = list(
                session.scalars(
                    select(Job.payload)
                    .where(Job.kind == ADDRESSES_JOB, Job.id > self._jobs_seen)
                    .order_by(Job.id)
                )
            )
            self._jobs_seen = max(
                [self._jobs_seen, *session.scalars(select(Job.id).where(Job.kind == ADDRESSES_JOB))]
            )
        return [handler(p) for p in payloads]

    def members(self, segment_id: str) -> set[str]:
        return audience.members(self.db, segment_id)

    def transitions(self, segment_id: str) -> list[tuple[str, str]]:
        return audience.transitions(self.db, segment_id)


@pytest.fixture
def fb(gf_db: Database, gf_database: GFDatabase) -> Feedback:
    return Feedback(gf_db, gf_database.workspace.id)


def test_a_click_and_an_open_move_the_profile_in_at_once(fb: Feedback) -> None:
    clicked = fb.segment({"email": "clicked", "within": "P7D"})
    opened = fb.segment({"email": "opened"})
    of_a_broadcast = fb.segment({"email": "clicked", "broadcast_id": "brd_other"})
    assert fb.members(clicked) == set()

    with fb.db.transaction() as session:
        assert engagement.clicked(session, fb.message_id, "https://example.com/x", fb.hit(), 0)
    assert fb.members(clicked) == set(), "moved by the event processing, not before"
    assert fb.process() == 1
    assert fb.members(clicked) == {fb.profile_id}
    assert fb.transitions(clicked) == [(fb.profile_id, "entered")]
    assert fb.members(opened) == set()
    assert fb.members(of_a_broadcast) == set()

    with fb.db.transaction() as session:
        assert engagement.opened(session, fb.message_id, fb.hit(), 0)
    fb.process()
    assert fb.members(opened) == {fb.profile_id}
    assert fb.transitions(opened) == [(fb.profile_id, "entered")]

    # A second click: no second entry; processing again: nothing more.
    with fb.db.transaction() as session:
        assert engagement.clicked(session, fb.message_id, "https://example.com/x", fb.hit(), 0)
    assert fb.process() == 1
    assert fb.process() == 0
    assert fb.transitions(clicked) == [(fb.profile_id, "entered")]
    # Every consumer (automations' too) was handed each profile event exactly once.
    assert fb.recorder.names == ["email_clicked", "email_opened", "email_clicked"]


def test_a_machine_click_moves_nobody(fb: Feedback) -> None:
    clicked = fb.segment({"email": "clicked"})
    scanner = Hit("HEAD", "Barracuda Sentinel", "203.0.113.9", fb.clock.now())
    with fb.db.transaction() as session:
        assert engagement.clicked(session, fb.message_id, "https://example.com/x", scanner, 0)
    fb.process()
    assert fb.members(clicked) == set()
    assert fb.transitions(clicked) == []


def test_a_bounce_moves_the_profile_in_and_out_of_not_bounced(fb: Feedback) -> None:
    bounced = fb.segment({"email": "bounced", "within": "P30D"})
    reachable = fb.segment({"all": [{"trait": "email", "op": "exists"},
                                    {"not": {"email": "bounced"}}]})  # fmt: skip
    assert fb.members(reachable) == {fb.profile_id}
    report = FeedbackEvent(
        type=MessageEventType.BOUNCED, email="ada@example.com", source="postmark",
        occurred_at=fb.clock.now(), message_id=fb.message_id, provider_event_id="pm-1",
        bounce_type="hard", reason="550 5.1.1 no such user",
    )  # fmt: skip
    with fb.db.transaction() as session:
        record(session, fb.project_id, [report])
    fb.process()
    assert fb.members(bounced) == {fb.profile_id}
    assert fb.transitions(bounced) == [(fb.profile_id, "entered")]
    assert fb.members(reachable) == set()
    assert fb.transitions(reachable) == [(fb.profile_id, "entered"), (fb.profile_id, "left")]
    # The relay's retry of the same report changes nothing.
    with fb.db.transaction() as session:
        assert record(session, fb.project_id, [report]) == []
    assert fb.process() == 0
    assert fb.transitions(bounced) == [(fb.profile_id, "entered")]


def test_a_one_click_unsubscribe_moves_the_profile_out_at_once(fb: Feedback) -> None:
    subscribed = fb.segment({"subscribed": True})
    unsubscribed = fb.segment({"subscribed": False})
    clicked = fb.segment({"email": "clicked"})  # reads no unsubscribes: never evaluated
    assert fb.members(subscribed) == {fb.profile_id}

    with fb.db.transaction() as session:
        preferences.one_click(session, fb.message_id, fb.hit())
    fb.process()
    assert fb.members(subscribed) == set()
    assert fb.transitions(subscribed) == [(fb.profile_id, "entered"), (fb.profile_id, "left")]
    assert fb.members(unsubscribed) == {fb.profile_id}
    assert fb.transitions(unsubscribed) == [(fb.profile_id, "entered")]
    assert fb.transitions(clicked) == []
    # Again: already unsubscribed, nothing moves.
    with fb.db.transaction() as session:
        preferences.one_click(session, fb.message_id, fb.hit())
    fb.process()
    assert fb.transitions(unsubscribed) == [(fb.profile_id, "entered")]


def test_an_unsubscribe_moves_every_profile_with_the_address(fb: Feedback) -> None:
    """Also a message sent to the address alone (no profile: no profile event), and a
    second profile sharing the address: the address job moves them."""
    twin = ledger.add_profile(fb.db, fb.project_id, {"email": "Ada@Example.com"})
    subscribed = fb.segment({"subscribed": True})
    unsubscribed = fb.segment({"subscribed": False})
    bare = fb.mail(None, "ada@example.com")
    with fb.db.transaction() as session:
        preferences.one_click(session, bare, fb.hit())
    assert fb.process() == 0  # no profile, no event
    assert fb.members(subscribed) == {fb.profile_id, twin}
    assert fb.address_jobs() == [{"profiles": 2, "entered": 2, "left": 2}]
    assert fb.members(subscribed) == set()
    assert fb.members(unsubscribed) == {fb.profile_id, twin}
    for profile_id in (fb.profile_id, twin):
        assert [k for p, k in fb.transitions(unsubscribed) if p == profile_id] == ["entered"]


def test_leaving_one_group_moves_the_profile_out_of_that_groups_segment(fb: Feedback) -> None:
    news = fb.segment({"subscribed": True, "group": "news"})
    everything = fb.segment({"subscribed": True})
    message_id = fb.mail(fb.profile_id, "ada@example.com", group="news")
    with fb.db.transaction() as session:
        preferences.one_click(session, message_id, fb.hit())
    fb.process()
    assert fb.members(news) == set()
    assert fb.transitions(news) == [(fb.profile_id, "entered"), (fb.profile_id, "left")]
    assert fb.members(everything) == {fb.profile_id}
    assert fb.transitions(everything) == [(fb.profile_id, "entered")]


def test_coming_back_on_the_preference_page_moves_the_profile_back_in(fb: Feedback) -> None:
    subscribed = fb.segment({"subscribed": True})
    with fb.db.transaction() as session:
        preferences.one_click(session, fb.message_id, fb.hit())
    fb.process()
    assert fb.members(subscribed) == set()
    # The unsubscribe's address job finds its profile already moved (by the event).
    assert fb.address_jobs() == [{"profiles": 1, "entered": 0, "left": 0}]

    # The page's form, "unsubscribe from everything" unticked: no event, a job.
    with fb.db.transaction() as session:
        preferences.save(session, fb.message_id, [], unsubscribe_all=False, hit=fb.hit())
    assert fb.members(subscribed) == set(), "moved by the job, once it runs"
    assert fb.address_jobs() == [{"profiles": 1, "entered": 1, "left": 0}]
    assert fb.members(subscribed) == {fb.profile_id}
    assert fb.transitions(subscribed) == [
        (fb.profile_id, "entered"), (fb.profile_id, "left"), (fb.profile_id, "entered"),
    ]  # fmt: skip
    # Saving the page again as it is changes nothing and queues nothing.
    with fb.db.transaction() as session:
        preferences.save(session, fb.message_id, [], unsubscribe_all=False, hit=fb.hit())
    assert fb.address_jobs() == []


def test_ticking_a_group_again_moves_the_profile_back_into_its_segment(fb: Feedback) -> None:
    with fb.db.transaction() as session:
        groups = [GroupDefinition("news", "News"), GroupDefinition("tips", "Tips")]
        preferences.set_groups(session, fb.owner, fb.project_id, groups)
    news = fb.segment({"subscribed": True, "group": "news"})
    tips = fb.segment({"subscribed": True, "group": "tips"})
    with fb.db.transaction() as session:
        preferences.save(session, fb.message_id, ["tips"], unsubscribe_all=False, hit=fb.hit())
    fb.process()  # leaving news is an email_unsubscribed event (group news)
    assert fb.members(news) == set()
    assert fb.members(tips) == {fb.profile_id}
    assert fb.address_jobs() == [{"profiles": 1, "entered": 0, "left": 0}]

    with fb.db.transaction() as session:
        preferences.save(
            session, fb.message_id, ["news", "tips"], unsubscribe_all=False, hit=fb.hit()
        )
    assert fb.address_jobs() == [{"profiles": 1, "entered": 1, "left": 0}]
    assert fb.members(news) == {fb.profile_id}
    assert fb.transitions(news) == [
        (fb.profile_id, "entered"), (fb.profile_id, "left"), (fb.profile_id, "entered"),
    ]  # fmt: skip
    assert fb.transitions(tips) == [(fb.profile_id, "entered")]


def test_the_suppressions_api_moves_every_profile_with_the_address(fb: Feedback) -> None:
    twin = ledger.add_profile(fb.db, fb.project_id, {"email": "ADA@example.com"})
    other = ledger.add_profile(fb.db, fb.project_id, {"email": "bob@example.com"})
    subscribed = fb.segment({"subscribed": True})
    unsubscribed = fb.segment({"subscribed": False})
    clicked = fb.segment({"email": "clicked"})
    assert fb.members(subscribed) == {fb.profile_id, twin, other}

    with fb.db.transaction() as session:
        suppressions.add(session, fb.owner, fb.project_id, "Ada@Example.com", "unsubscribed")
    assert fb.address_jobs() == [{"profiles": 2, "entered": 2, "left": 2}]
    assert fb.members(subscribed) == {other}
    assert fb.members(unsubscribed) == {fb.profile_id, twin}
    # Suppressed for another reason: still subscribed (a bounce is no choice), no job.
    with fb.db.transaction() as session:
        suppressions.add(session, fb.owner, fb.project_id, "bob@example.com", "manual")
    assert fb.address_jobs() == []

    with fb.db.transaction() as session:
        suppressions.remove(session, fb.owner, fb.project_id, "ada@example.com")
    assert fb.address_jobs() == [{"profiles": 2, "entered": 2, "left": 2}]
    assert fb.members(subscribed) == {fb.profile_id, twin, other}
    assert fb.members(unsubscribed) == set()
    assert [k for p, k in fb.transitions(unsubscribed) if p == twin] == ["entered", "left"]
    assert fb.transitions(clicked) == []


def test_automations_start_on_a_click_and_exit_on_an_unsubscribe(fb: Feedback) -> None:
    """The same email_* events reach automations' consumer: a trigger on ``email_clicked``
    starts one run per click's profile, ``exit_on`` ``email_unsubscribed`` ends it."""
    fb.consumers.append(triggers.EventConsumer(fb.clock))
    body = {
        "name": "Clicked: follow up", "trigger": {"event": "email_clicked"},
        "steps": [{"id": "wait", "type": "delay", "duration": "P1D"}],
        "exit_on": {"event": "email_unsubscribed"},
    }  # fmt: skip
    with fb.db.transaction() as session:
        made = automations.create(session, fb.owner, fb.project_id, body)
        automations.activate(session, fb.owner, made.id, fb.clock.now())
        automation_id = made.id

    def runs() -> list[tuple[str, str]]:
        with fb.db.read() as session:
            found = session.execute(
                select(AutomationRun.profile_id, AutomationRun.status).where(
                    AutomationRun.automation_id == automation_id
                )
            )
            return [(p, s) for p, s in found]

    with fb.db.transaction() as session:
        engagement.clicked(session, fb.message_id, "https://example.com/x", fb.hit(), 0)
    fb.process()
    assert runs() == [(fb.profile_id, "running")]
    fb.process()
    assert runs() == [(fb.profile_id, "running")]  # seen once
    with fb.db.transaction() as session:
        preferences.one_click(session, fb.message_id, fb.hit())
    fb.process()
    assert runs() == [(fb.profile_id, "exited")]


def test_the_pass_moves_clickers_out_as_their_window_closes_without_a_full_recompute(
    fb: Feedback, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the profiles whose feedback, or sent mail, left a window are evaluated as time
    passes; after the first pass (every segment in full), nothing is recomputed in full."""
    clicked = fb.segment({"email": "clicked", "within": "P7D"})
    opened = fb.segment({"email": "opened"})
    subscribed = fb.segment({"subscribed": True})
    sent = fb.segment({"email": "sent", "within": "P1D"})
    runner = membership.SegmentRunner(fb.db, fb.clock, cache=fb.cache)
    runner.run_once()  # the project's first pass: every segment in full
    recomputed: list[Any] = []
    real = membership.recompute_in_pages

    def spy(*args: Any, **kwargs: Any) -> tuple[int, int]:
        recomputed.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(membership, "recompute_in_pages", spy)
    assert fb.members(sent) == {fb.profile_id}  # sent an hour ago

    with fb.db.transaction() as session:
        assert engagement.clicked(session, fb.message_id, "https://example.com/x", fb.hit(), 0)
    fb.process()
    assert fb.members(clicked) == {fb.profile_id}
    fb.clock.advance(timedelta(days=6))
    # The message was sent more than a day ago now: that segment loses it (the row its
    # computation left for the end of the window, drained by the pass).
    assert runner.run_once() == {"entered": 0, "left": 1}
    assert fb.members(clicked) == {fb.profile_id}
    assert fb.members(sent) == set()
    fb.clock.advance(timedelta(days=2))
    assert runner.run_once() == {"entered": 0, "left": 1}
    assert fb.members(clicked) == set()
    assert fb.transitions(clicked) == [(fb.profile_id, "entered"), (fb.profile_id, "left")]
    assert fb.members(subscribed) == {fb.profile_id}
    assert fb.members(opened) == set()
    assert recomputed == []
