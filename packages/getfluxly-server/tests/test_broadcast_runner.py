"""The broadcast runner and the broadcast actions in this process, on SQLite and PostgreSQL,
with the engine's clock in the test's hand (``ManualClock``): a scheduled start, the rate's
token bucket, who is skipped, a pause that holds messages a worker already claimed, a cancel,
and a broadcast the runner cannot go on with. Delivery is the server's own ``Dispatcher``
to a real SMTP server on loopback.

(The API, the worker processes, pause/resume under load and SIGKILL are in
``test_broadcasts.py``.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from flux_testkit import audience, ledger
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.domain import broadcasts
from getfluxly_server.domain.broadcasts import BroadcastRunner, InvalidTransition
from getfluxly_server.domain.clock import ManualClock
from getfluxly_server.domain.delivery import Dispatcher
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import outbox
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Message,
    Profile,
    Segment,
    SegmentMember,
    Suppression,
    Template,
    new_id,
    now,
)

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Setup:
    db: Database
    keyring: Keyring
    principal: Principal
    project_id: str
    provider_id: str
    template_id: str
    relay: SMTPTestServer

    def broadcast(self, segment_id: str, **options: object) -> str:
        with self.db.transaction() as session:
            return broadcasts.create(
                session, self.principal, self.project_id, name="News",
                template_id=self.template_id, segment_id=segment_id, **options,  # type: ignore[arg-type]
            ).id  # fmt: skip

    def act(self, action: str, broadcast_id: str, clock: ManualClock) -> str:
        with self.db.transaction() as session:
            done = getattr(broadcasts, action)(session, self.principal, broadcast_id, clock=clock)
            return str(done.status)

    def counts(self, broadcast_id: str) -> broadcasts.Counts:
        with self.db.read() as session:
            row = broadcasts.find(session, self.principal, broadcast_id)
            return broadcasts.counts(session, [row])[broadcast_id]

    def status(self, broadcast_id: str) -> str:
        with self.db.read() as session:
            return str(broadcasts.find(session, self.principal, broadcast_id).status)

    def deliver(self) -> None:
        """Every due message, with the server's delivery loop, in this thread."""
        workers = Dispatcher(
            self.db, keyring=self.keyring, build_context=BuildContext(timeout=10.0), threads=0
        )
        try:
            while workers.run_once():
                pass
        finally:
            workers.stop()

    def received(self) -> Counter[str]:
        return Counter(r for m in self.relay.messages for r in m.rcpt_tos)


@pytest.fixture
def setup(gf_db: Database, gf_database: GFDatabase) -> Iterator[Setup]:
    with SMTPTestServer(auth=True, pipelining=True) as relay:
        keyring = Keyring.parse(Keyring.generate())
        project = ledger.make_project(gf_db, gf_database.workspace.id)
        provider = ledger.add_provider(
            gf_db, keyring, project, ledger.smtp_body(relay.host, relay.port)
        )
        template = ledger.add_template(
            gf_db, project, "News for {{ profile.n }}", text="Hello {{ profile.email }}"
        )
        principal = Principal("key", "workspace", gf_database.workspace.id, None)
        yield Setup(gf_db, keyring, principal, project, provider, template, relay)


def test_a_scheduled_broadcast_starts_when_the_clock_reaches_send_at(setup: Setup) -> None:
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 30)
    broadcast = setup.broadcast(members.segment_id, send_at=START + timedelta(hours=1))
    assert setup.act("start", broadcast, clock) == "scheduled"
    runner = BroadcastRunner(setup.db, clock)

    assert runner.run_once() == 0
    assert setup.status(broadcast) == "scheduled"
    assert setup.counts(broadcast).targeted == 0
    # A member who joins before the start is in the audience: it is taken at the start.
    with setup.db.transaction() as session:
        late = Profile(id=new_id("prf"), project_id=setup.project_id,
                       traits={"email": audience.address(30), "n": 30})  # fmt: skip
        session.add(late)
        session.flush()
        session.add(SegmentMember(segment_id=members.segment_id, profile_id=late.id))
    clock.set(START + timedelta(hours=1))
    assert runner.run_once() > 0
    assert setup.status(broadcast) == "sending"
    counts = setup.counts(broadcast)
    assert (counts.targeted, counts.pending) == (31, 31)

    setup.deliver()
    runner.run_once()
    assert setup.status(broadcast) == "sent"
    assert setup.received() == Counter({audience.address(n): 1 for n in range(31)})
    counts = setup.counts(broadcast)
    assert (counts.sent, counts.pending, counts.failed) == (31, 0, 0)


def test_the_rate_is_a_token_bucket_on_the_engine_clock(setup: Setup) -> None:
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 20)
    broadcast = setup.broadcast(members.segment_id, rate_per_minute=120)  # 2 a second
    assert setup.act("start", broadcast, clock) == "sending"
    runner = BroadcastRunner(setup.db, clock)

    assert runner.run_once() == 2  # a full bucket: one second's worth
    assert runner.run_once() == 0  # no time has passed
    clock.advance(timedelta(milliseconds=500))
    assert runner.run_once() == 1
    clock.advance(timedelta(minutes=5))  # a long wait never bursts past one second's worth
    assert runner.run_once() == 2
    assert _recorded(setup.db, broadcast) == 5


def _recorded(db: Database, broadcast_id: str) -> int:
    with db.read() as session:
        query = select(func.count()).where(Message.broadcast_id == broadcast_id)
        return int(session.scalar(query) or 0)


def test_members_without_a_usable_address_are_skipped_and_the_counts_add_up(
    setup: Setup,
) -> None:
    clock = ManualClock(START)
    odd = {
        0: {"n": 0},  # no email trait
        1: {"email": "not an address"},
        2: {"email": 42},
        3: {"email": "erased@example.com"},  # erased below
        4: {"email": "listed@example.com"},  # suppressed below
    }
    members = audience.add_segment(
        setup.db, setup.project_id, 10,
        traits_for=lambda n: odd.get(n, {"email": audience.address(n), "n": n}),
    )  # fmt: skip
    with setup.db.transaction() as session:
        erased = session.get(Profile, members.profile_ids[3])
        assert erased is not None
        erased.erased_at = now()
        # Profile 6 merged into profile 5 after both entered the segment: one person.
        merged = session.get(Profile, members.profile_ids[6])
        assert merged is not None
        merged.merged_into = members.profile_ids[5]
        session.add(
            Suppression(project_id=setup.project_id, email="listed@example.com", reason="manual")
        )
    broadcast = setup.broadcast(members.segment_id)
    setup.act("start", broadcast, clock)
    runner = BroadcastRunner(setup.db, clock)
    runner.run_once()
    setup.deliver()
    runner.run_once()

    assert setup.status(broadcast) == "sent"
    counts = setup.counts(broadcast)
    assert counts == broadcasts.Counts(
        targeted=10, sent=4, failed=0, suppressed=1, pending=0, skipped=5, cancelled=0
    )
    expected = {audience.address(n): 1 for n in (5, 7, 8, 9)}
    assert setup.received() == Counter(expected)


def test_a_pause_holds_messages_a_worker_has_claimed_and_resume_sends_each_once(
    setup: Setup,
) -> None:
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 50)
    broadcast = setup.broadcast(members.segment_id)
    setup.act("start", broadcast, clock)
    BroadcastRunner(setup.db, clock).run_once()
    with setup.db.transaction() as session:
        claimed = outbox.claim(session, "slow-worker", timedelta(seconds=60), 20).messages
    assert len(claimed) == 20

    assert setup.act("pause", broadcast, clock) == "paused"
    with setup.db.transaction() as session:  # the slow worker gets to its chunk
        sending = outbox.start_sending(
            session, "slow-worker", [m.id for m in claimed], timedelta(seconds=60)
        )
    assert sending == set()
    setup.deliver()
    assert setup.relay.messages == []  # nothing goes out while paused
    with pytest.raises(InvalidTransition) as refused:
        setup.act("pause", broadcast, clock)
    assert (refused.value.code, refused.value.extra["status"]) == ("invalid_transition", "paused")

    # The audience was taken at the start: deleting the segment now changes nothing.
    with setup.db.transaction() as session:
        segment = session.get(Segment, members.segment_id)
        assert segment is not None
        segment.deleted_at = now()
    assert setup.act("resume", broadcast, clock) == "sending"
    runner = BroadcastRunner(setup.db, clock)
    setup.deliver()
    runner.run_once()
    assert setup.status(broadcast) == "sent"
    assert setup.received() == Counter({audience.address(n): 1 for n in range(50)})


def test_cancel_withdraws_what_was_not_sent_and_ends_the_broadcast(setup: Setup) -> None:
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 40)
    broadcast = setup.broadcast(members.segment_id)
    setup.act("start", broadcast, clock)
    BroadcastRunner(setup.db, clock, slice_size=10).run_once()  # 10 recorded, 30 not yet

    assert setup.act("cancel", broadcast, clock) == "cancelled"
    BroadcastRunner(setup.db, clock).run_once()
    setup.deliver()
    assert setup.relay.messages == []
    assert setup.counts(broadcast) == broadcasts.Counts(
        targeted=40, sent=0, failed=0, suppressed=0, pending=0, skipped=0, cancelled=40
    )
    for action in ("start", "pause", "resume", "cancel"):
        with pytest.raises(InvalidTransition):
            setup.act(action, broadcast, clock)


def test_a_broadcast_whose_template_is_deleted_pauses_with_the_reason(setup: Setup) -> None:
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 5)
    broadcast = setup.broadcast(members.segment_id)
    setup.act("start", broadcast, clock)
    with setup.db.transaction() as session:
        template = session.get(Template, setup.template_id)
        assert template is not None
        template.deleted_at = now()
    BroadcastRunner(setup.db, clock).run_once()

    with setup.db.read() as session:
        row = broadcasts.find(session, setup.principal, broadcast)
        assert (row.status, row.last_error) == (
            "paused",
            "template_id: no such template in this project (or it was deleted)",
        )
    with pytest.raises(ValidationFailed) as refused:
        setup.act("resume", broadcast, clock)
    assert refused.value.extra["field"] == "template_id"
    assert setup.counts(broadcast).pending == 5


def test_counts_add_up_while_the_runner_records_a_slice_between_the_row_and_the_count(
    setup: Setup,
) -> None:
    # A reader that has the broadcast's row already when the runner commits a slice (as the
    # API's GET does: the row, then the counts) still gets counts adding up to targeted.
    clock = ManualClock(START)
    members = audience.add_segment(setup.db, setup.project_id, 30)
    broadcast = setup.broadcast(members.segment_id)
    setup.act("start", broadcast, clock)
    runner = BroadcastRunner(setup.db, clock, slice_size=10)
    runner.run_once()
    with setup.db.read() as session:
        row = broadcasts.find(session, setup.principal, broadcast)
        assert row.next_position == 10
        runner.run_once()  # another transaction: 10 more recorded and committed
        counts = broadcasts.counts(session, [row])[broadcast]
    parts = (counts.sent, counts.failed, counts.suppressed, counts.pending, counts.skipped,
             counts.cancelled)  # fmt: skip
    assert counts.targeted == 30
    assert sum(parts) == 30
