"""How event inserts and event processing (stitching) meet in the database.

Contract (``storage.profiles.lock_project``, ``storage.events.settle_inserts``,
``domain.identity.process_project``):

* PostgreSQL: an ingest commits while the project's events are being processed: the
  processor's lock on the project row (``FOR NO KEY UPDATE``) does not conflict with the key
  share lock the events' foreign key takes. (With ``FOR UPDATE`` every ingest transaction
  waited for the processing transaction of the moment, automations' work included.)
* PostgreSQL: a processor waits for the event inserts under way before it reads, so it sees
  every event whose insert began before it looked (an insert that found a processing job
  already queued is never left for the next event to pick up).
* A backlog is processed in chunks of ``CHUNK_PER_TRANSACTION`` (SQLite, whose single write
  lock every other writer waits for) or ``CHUNK_PER_TRANSACTION_POSTGRES`` events a
  transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from flux_testkit import ledger
from getfluxly_server.domain import identity
from getfluxly_server.storage import events as event_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Event, now

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

WAIT = 20.0  # seconds: only bounds a failing test


def _rows(project_id: str, prefix: str, count: int) -> list[dict[str, Any]]:
    moment = now()
    return [
        {
            "project_id": project_id, "message_id": f"{prefix}-{n}", "type": "track",
            "name": "signed_up", "anonymous_id": None, "external_id": f"{prefix}-user-{n % 7}",
            "user_id": None, "properties": {}, "traits": {}, "context": {},
            "timestamp": moment, "received_at": moment,
        }
        for n in range(count)
    ]  # fmt: skip


class _Chunks:
    """An event consumer that notes the size of each chunk it is given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, session: Session, project_id: str, events: Sequence[Event]) -> None:
        self.sizes.append(len(events))


def _postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer at a time: an ingest waits for processing there")


def test_an_ingest_commits_while_its_project_is_being_processed(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    _postgres_only(gf_db)
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    with gf_db.transaction() as processing:
        identity.lock_for_processing(processing, project_id)
        # Another connection inserts and commits while the lock is held; were it to wait for
        # the processor, it would fail with the lock timeout instead of hanging the test.
        with gf_db.transaction() as ingest:
            ingest.execute(text("SET LOCAL lock_timeout = '10s'"))
            assert event_store.insert_events(ingest, _rows(project_id, "during", 3)) == 3
    assert identity.process_project(gf_db, project_id) == 3


def test_processing_waits_for_the_inserts_under_way_and_sees_them(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    _postgres_only(gf_db)
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    with gf_db.transaction() as session:
        event_store.insert_events(session, _rows(project_id, "before", 2))
    processed: list[int] = []
    failed: list[BaseException] = []

    def process() -> None:
        try:
            processed.append(identity.process_project(gf_db, project_id))
        except BaseException as exc:  # reported by the test thread
            failed.append(exc)

    with gf_db.transaction() as ingest:
        # An insert under way (not committed) when processing starts.
        assert event_store.insert_events(ingest, _rows(project_id, "open", 4)) == 4
        processor = threading.Thread(target=process)
        processor.start()
        # The processor is seen waiting for the inserts' lock before this insert commits.
        deadline = time.monotonic() + WAIT
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )

        def seen_waiting() -> bool:
            # A transaction per look: pg_stat_activity is read once per transaction.
            with gf_db.engine.connect() as watcher:
                return bool(watcher.execute(waiting).scalar())

        while not seen_waiting():
            assert processor.is_alive(), "processing did not wait for the insert under way"
            assert time.monotonic() < deadline, "processing is not waiting for the insert"
            time.sleep(0.01)
    processor.join(WAIT)
    assert not failed, failed
    assert processed == [6]  # the open insert's events too, in the same pass
    with gf_db.read() as session:
        left = session.scalar(
            select(func.count()).where(Event.project_id == project_id, Event.processed_at.is_(None))
        )
    assert left == 0


def test_a_backlog_is_processed_in_chunks_of_the_databases_size(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    chunk = (
        identity.CHUNK_PER_TRANSACTION
        if gf_db.is_sqlite
        else identity.CHUNK_PER_TRANSACTION_POSTGRES
    )
    backlog = chunk + chunk // 2
    with gf_db.transaction() as session:
        assert event_store.insert_events(session, _rows(project_id, "backlog", backlog)) == backlog
    consumer = _Chunks()
    assert identity.process_project(gf_db, project_id, [consumer]) == backlog
    assert consumer.sizes == [chunk, backlog - chunk]
