"""``{"email": "sent"}`` segments move as the delivery workers record messages sent, on
SQLite and PostgreSQL, with no periodic pass; and the pass carries on from its last one.

Contract (engine spec section 3: "membership is kept current as events and traits arrive
and as time passes"): a message the real delivery loop hands to a real SMTP relay and records
``sent`` moves its profile into the project's ``sent`` segments once the ``segments.sent``
job has run, one job waiting per project however many chunks were recorded; a project with
no such segment gets neither rows nor a job; a ``within`` window closing moves the profile
out at the next pass without recomputing anything in full. A worker's pass starts from the
project's last recorded pass (a restarted worker recomputes nothing), and a full
computation walks the profiles a page per transaction.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from flux_testkit import audience, ledger
from flux_testkit.gfserver import GFDatabase
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.domain import identity, ingest
from getfluxly_server.domain.clock import ManualClock
from getfluxly_server.domain.delivery import Dispatcher
from getfluxly_server.domain.segments import membership, rules
from getfluxly_server.domain.segments import sent as segment_sent
from getfluxly_server.domain.segments.sent import SENT_JOB
from getfluxly_server.storage import events as event_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Job,
    Message,
    Segment,
    SegmentPending,
    new_id,
)

DAY = timedelta(days=1)


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(pipelining=True, auth=True) as server:
        yield server


class Project:
    """A project with profiles, segments, a real relay and the segment machinery."""

    def __init__(self, db: Database, workspace_id: str, relay: SMTPTestServer) -> None:
        self.db = db
        self.keyring = Keyring.parse(Keyring.generate())
        self.project_id = ledger.make_project(db, workspace_id)
        self.provider = ledger.add_provider(
            db, self.keyring, self.project_id, ledger.smtp_body(relay.host, relay.port)
        )
        self.clock = ManualClock(datetime.now(UTC))
        self.cache = membership.RuleCache()
        [self.drain] = [
            h for h in membership.handlers(db, self.clock, self.cache) if h.kind.name == SENT_JOB
        ]

    def segment(self, rule: Any) -> str:
        rules.parse(rule)
        with self.db.transaction() as session:
            row = Segment(id=new_id("seg"), project_id=self.project_id, name=new_id("n"),
                          rule=rule)  # fmt: skip
            session.add(row)
        membership.compute(self.db, self.clock, row.id, self.cache)
        return row.id

    def mail(self, profiles: list[str], window: int) -> list[str]:
        """A message to each profile, delivered by the real delivery loop (windows of
        ``window``) to the relay; their ids."""
        ids = [
            ledger.queue_messages(
                self.db, self.project_id, self.provider, [f"{p}@example.com"], profile_id=p
            )[0]
            for p in profiles
        ]
        dispatcher = Dispatcher(
            self.db, keyring=self.keyring, build_context=BuildContext(timeout=5.0),
            chunk=50, window=window, batch=500, rng=random.Random(3),
        )  # fmt: skip
        try:
            assert dispatcher.run_once() == len(ids)
        finally:
            dispatcher.stop()
        with self.db.read() as session:
            statuses = session.scalars(select(Message.status).where(Message.id.in_(ids)))
            assert set(statuses) == {"sent"}
        return ids

    def jobs(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return list(
                session.scalars(
                    select(Job.payload).where(Job.kind == SENT_JOB, Job.status == "queued")
                )
            )

    def run_jobs(self) -> list[dict[str, int]]:
        """Run the waiting ``segments.sent`` jobs, as a worker does (the handler only)."""
        return [self.drain(payload) for payload in self.jobs()]

    def pending(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(SegmentPending)) or 0)

    def members(self, segment_id: str) -> set[str]:
        return audience.members(self.db, segment_id)

    def transitions(self, segment_id: str) -> list[tuple[str, str]]:
        return audience.transitions(self.db, segment_id)


@pytest.fixture
def world(gf_db: Database, gf_database: GFDatabase, relay: SMTPTestServer) -> Project:
    return Project(gf_db, gf_database.workspace.id, relay)


def test_messages_sent_by_the_workers_move_sent_segments_at_once(
    world: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = [ledger.add_profile(world.db, world.project_id, {"n": i}) for i in range(12)]
    ever = world.segment({"email": "sent"})
    today = world.segment({"email": "sent", "within": "P1D"})
    never = world.segment({"trait": "n", "op": "exists"})  # reads no mail
    not_mailed = world.segment({"all": [{"trait": "n", "op": "exists"},
                                        {"not": {"email": "sent"}}]})  # fmt: skip
    assert world.members(not_mailed) == set(profiles)
    runner = membership.SegmentRunner(world.db, world.clock, cache=world.cache)
    runner.run_once()  # the project's first pass (in full): nothing mailed yet

    mailed, rest = profiles[:10], profiles[10:]
    world.mail(mailed, window=3)  # four windows, each recorded in its own transaction
    # One job waiting for the project, whatever the number of chunks recorded.
    assert world.jobs() == [{"project_id": world.project_id}]
    assert world.pending() == 2 * len(mailed)  # due now, and when the day's window ends
    [done] = world.run_jobs()
    assert done == {"profiles": 10, "entered": 20, "left": 10}
    assert world.members(ever) == set(mailed)
    assert world.members(today) == set(mailed)
    assert world.members(not_mailed) == set(rest)
    assert world.members(never) == set(profiles)
    assert world.transitions(ever) == [(p, "entered") for p in sorted(mailed)]
    assert world.pending() == len(mailed)  # the window ends are still to come

    recomputed: list[Any] = []
    real = membership.recompute_in_pages

    def spy(*args: Any, **kwargs: Any) -> tuple[int, int]:
        recomputed.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(membership, "recompute_in_pages", spy)
    assert runner.run_once() == {"entered": 0, "left": 0}
    world.clock.advance(DAY + timedelta(minutes=1))
    # A restarted worker carries on from the recorded pass: only the window ends move.
    restarted = membership.SegmentRunner(world.db, world.clock, cache=membership.RuleCache())
    assert restarted.run_once() == {"entered": 0, "left": 10}
    assert world.members(today) == set()
    assert world.members(ever) == set(mailed)
    assert world.pending() == 0
    assert recomputed == []


def test_a_project_without_sent_segments_gets_no_rows_and_no_job(world: Project) -> None:
    profiles = [ledger.add_profile(world.db, world.project_id, {"n": i}) for i in range(4)]
    world.segment({"email": "clicked"})
    world.mail(profiles, window=2)
    assert world.jobs() == []
    assert world.pending() == 0


def test_the_rows_of_deleted_sent_segments_are_dropped_by_the_next_pass(world: Project) -> None:
    profiles = [ledger.add_profile(world.db, world.project_id, {"n": i}) for i in range(3)]
    today = world.segment({"email": "sent", "within": "P1D"})
    runner = membership.SegmentRunner(world.db, world.clock, cache=world.cache)
    runner.run_once()
    world.mail(profiles, window=10)
    assert world.pending() == 2 * len(profiles)  # due now, and when the window ends
    with world.db.transaction() as session:  # the project's only segment goes
        session.execute(
            update(Segment).where(Segment.id == today).values(deleted_at=datetime.now(UTC))
        )
    assert runner.run_once() == {"entered": 0, "left": 0}
    assert world.pending() == 0
    assert world.run_jobs() == [{"profiles": 0, "entered": 0, "left": 0}]  # the job's too


def test_a_sent_segment_made_after_the_mail_leaves_it_when_its_window_ends(
    world: Project,
) -> None:
    profiles = [ledger.add_profile(world.db, world.project_id, {"n": i}) for i in range(3)]
    world.mail(profiles, window=10)
    assert world.jobs() == []
    today = world.segment({"email": "sent", "within": "P1D"})  # computed in full
    assert world.members(today) == set(profiles)
    runner = membership.SegmentRunner(world.db, world.clock, cache=world.cache)
    runner.run_once()
    world.clock.advance(DAY + timedelta(minutes=1))
    assert runner.run_once() == {"entered": 0, "left": 3}
    assert world.members(today) == set()


def test_a_sent_segment_saved_while_mail_is_being_recorded_waits_for_it(
    world: Project, gf_database: GFDatabase
) -> None:
    """The recording transaction looked for the project's sent segments before the new one
    was saved (so it writes no segment_pending row), and commits only after the segment's
    computation has begun: the computation waits for it and finds the profile."""
    if gf_database.backend != "postgres":
        pytest.skip("SQLite has one writer at a time: the recording is over before the segment")
    [profile] = [ledger.add_profile(world.db, world.project_id, {"n": 1})]
    [message_id] = ledger.queue_messages(
        world.db, world.project_id, world.provider, ["late@example.com"], profile_id=profile
    )
    looked, commit = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:  # as the delivery loop records an outcome
        try:
            with world.db.transaction() as session:
                session.execute(
                    update(Message).where(Message.id == message_id)
                    .values(status="sent", sent_at=datetime.now(UTC))
                )  # fmt: skip
                segment_sent.messages_sent(session, [message_id])  # finds no sent segment
                looked.set()
                commit.wait(30)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    recording = threading.Thread(target=worker)
    recording.start()
    assert looked.wait(30)
    with world.db.transaction() as session:
        segment = Segment(id=new_id("seg"), project_id=world.project_id, name="mailed",
                          rule={"email": "sent"})  # fmt: skip
        session.add(segment)
    computing = threading.Thread(
        target=membership.compute, args=(world.db, world.clock, segment.id, world.cache)
    )
    computing.start()
    try:
        eventually(lambda: gf_database.lock_waiters() >= 1, "the computation to wait", 15)
    finally:
        commit.set()
        recording.join(30)
        computing.join(60)
    assert failures == []
    assert world.pending() == 0  # the recording wrote no row: the computation found it
    assert world.members(segment.id) == {profile}


def test_a_full_computation_takes_a_page_of_profiles_per_transaction(
    world: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        ingest.validate({"event": "login", "external_id": f"u{i}"}, world.project_id,
                        world.clock.now())
        for i in range(7)
    ]  # fmt: skip
    with world.db.transaction() as session:
        event_store.insert_events(session, rows)
    identity.process_project(world.db, world.project_id, [])
    with world.db.transaction() as session:
        segment = Segment(id=new_id("seg"), project_id=world.project_id, name="logins",
                          rule={"event": "login"})  # fmt: skip
        session.add(segment)
    opened = 0
    real = world.db.transaction

    def counting() -> Any:
        nonlocal opened
        opened += 1
        return real()

    monkeypatch.setattr(world.db, "transaction", counting)
    assert membership.recompute_in_pages(
        world.db, world.clock, world.project_id, {segment.id}, world.cache, page=2
    ) == (7, 0)
    assert opened == 4  # 2 + 2 + 2 + 1 profiles
    assert len(world.members(segment.id)) == 7
