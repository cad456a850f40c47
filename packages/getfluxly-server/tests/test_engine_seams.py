"""The seams feedback and the engine are built on, on SQLite and PostgreSQL.

- Claim order: due messages are claimed by priority (transactional, then automation, then
  broadcast), and by due time within a priority, so a broadcast queued earlier never holds
  back a transactional message.
- Event consumers: a worker's features are told of each chunk of events once stitched to
  their profiles, in the transaction that stitched them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from flux_testkit import ledger
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import identity
from getfluxly_server.domain.clock import SYSTEM, ManualClock
from getfluxly_server.domain.messages import enqueue_many
from getfluxly_server.domain.messages.enqueue import (
    BulkRecipient,
    Content,
    NewMessage,
    Source,
    enqueue,
)
from getfluxly_server.domain.messages.recipients import Recipient
from getfluxly_server.storage import outbox
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Event, MessagePriority, Profile, now

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

INLINE = Content(subject="Hi", text="Hello")


def _bulk(db: Database, project_id: str, provider_id: str, origin: str, n: int) -> None:
    recipients = [BulkRecipient(f"{origin}{i}@example.com", f"{origin}-{i}") for i in range(n)]
    source = Source(origin=origin, provider_id=provider_id, transactional=False)  # type: ignore[arg-type]
    with db.transaction() as session:
        assert len(enqueue_many(session, project_id, recipients, INLINE, source).created) == n


def test_transactional_mail_is_claimed_before_an_earlier_broadcast(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    keyring = Keyring.parse(Keyring.generate())
    provider_id = ledger.add_provider(gf_db, keyring, project_id, ledger.smtp_body("127.0.0.1", 25))
    _bulk(gf_db, project_id, provider_id, "broadcast", 50)
    _bulk(gf_db, project_id, provider_id, "automation", 5)
    with gf_db.transaction() as session:
        urgent = enqueue(
            session,
            project_id,
            NewMessage(
                Recipient(email="reset@example.com"), INLINE, Source(provider_id=provider_id)
            ),
        ).message.id

    with gf_db.transaction() as session:
        claim = outbox.claim(session, "w1", timedelta(seconds=60), 6)
    taken = [m.id for m in claim.messages]
    assert taken[0] == urgent
    assert all(m.to_email.startswith("automation") for m in claim.messages[1:])

    with gf_db.transaction() as session:
        rest = outbox.claim(session, "w2", timedelta(seconds=60), 100)
    assert len(rest.messages) == 50
    assert all(m.to_email.startswith("broadcast") for m in rest.messages)
    assert (
        int(MessagePriority.TRANSACTIONAL) < MessagePriority.AUTOMATION < MessagePriority.BROADCAST
    )


class _Recorder:
    """An event consumer that writes what it is told into the stitching transaction."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str | None]]] = []

    def __call__(self, session: Session, project_id: str, events: Sequence[Event]) -> None:
        self.calls.append((project_id, [e.profile_id for e in events]))
        # The profile each event was stitched to is already visible here.
        for event in events:
            assert event.profile_id is not None
            assert session.get(Profile, event.profile_id) is not None


def _store_events(db: Database, project_id: str, count: int) -> None:
    moment = now()
    with db.transaction() as session:
        for n in range(count):
            session.add(
                Event(
                    project_id=project_id, message_id=f"m{n}", type="track", name="signed_up",
                    external_id=f"user-{n % 3}", timestamp=moment, received_at=moment,
                )
            )  # fmt: skip


def test_event_consumers_see_each_stitched_chunk_in_its_transaction(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    _store_events(gf_db, project_id, 7)
    recorder = _Recorder()
    assert identity.process_project(gf_db, project_id, [recorder]) == 7
    [(seen_project, profiles)] = recorder.calls
    assert seen_project == project_id
    assert len(profiles) == 7
    assert len(set(profiles)) == 3

    # A consumer that fails rolls the chunk back: the events stay unprocessed, to be retried.

    def failing(session: Session, project_id: str, events: Sequence[Event]) -> None:
        raise RuntimeError("the engine could not keep up")

    with gf_db.transaction() as session:
        session.add(
            Event(
                project_id=project_id, message_id="late", type="track", name="login",
                external_id="user-9", timestamp=now(), received_at=now(),
            )
        )  # fmt: skip
    try:
        identity.process_project(gf_db, project_id, [failing])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the consumer's failure was swallowed")
    with gf_db.read() as session:
        late = session.scalars(select(Event).where(Event.message_id == "late")).one()
        assert late.processed_at is None
        assert late.profile_id is None
    assert identity.process_project(gf_db, project_id, [recorder]) == 1


def test_the_manual_clock_moves_only_forward() -> None:
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.now() == start
    assert clock.advance(timedelta(hours=2)) == start + timedelta(hours=2)
    with pytest.raises(ValueError, match="forward"):
        clock.set(start)
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2026, 1, 1))
    assert SYSTEM.now().tzinfo is not None
