"""Group commit (storage/group_commit.py) on SQLite and PostgreSQL, in-process.

Contract: items submitted while a writer is busy are committed together; each caller gets its
own result only after its group committed; a handler may fail single items in place; a group
whose transaction fails is retried item by item, so only the bad item fails; an item whose
caller gave up before a writer took it is never written; close() commits what was queued.
The handler here writes job rows, so what was committed is read back from the database.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.group_commit import GroupCommit
from getfluxly_server.storage.models import Job

KIND = "test.group"


class Recorder:
    """A handler that writes one job per item and records the groups it was given.

    ``hold`` (when set) keeps the first group waiting until released, so that the items
    submitted meanwhile queue up behind it. Item "bad" breaks the transaction; item
    "refused" is failed in place.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.groups: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, session: Session, items: Sequence[str]) -> list[str | Exception]:
        self.groups.append(list(items))
        self.entered.set()
        assert self.release.wait(30), "the test never released the writer"
        results: list[str | Exception] = []
        for item in items:
            if item == "refused":
                results.append(ValueError("refused in place"))
                continue
            jobs.enqueue(session, KIND, {"item": item})
            if item == "bad":
                raise RuntimeError("this item breaks its transaction")
            results.append(f"stored {item}")
        return results


def _stored(db: Database) -> list[str]:
    with db.read() as session:
        payloads = session.scalars(select(Job.payload).where(Job.kind == KIND).order_by(Job.id))
        return [p["item"] for p in payloads]


def _writer(db: Database, handler: Recorder, threads: int = 1) -> GroupCommit[str, str]:
    return GroupCommit(db, handler, name="test-writer", threads=threads, max_weight=50)


def test_waiting_items_share_a_transaction_and_each_gets_its_own_answer(gf_db: Database) -> None:
    handler = Recorder(hold=True)
    writer = _writer(gf_db, handler)
    try:
        first = writer.submit("first")
        assert handler.entered.wait(10)
        queued = [writer.submit(f"item-{i}") for i in range(120)]
        assert not any(f.done() for f in [first, *queued])  # nothing answered before commit
        handler.release.set()
        assert first.result(30) == "stored first"
        assert [f.result(30) for f in queued] == [f"stored item-{i}" for i in range(120)]
    finally:
        writer.close()
    # The first group was alone; the 120 behind it went in groups of at most 50.
    assert [len(g) for g in handler.groups] == [1, 50, 50, 20]
    assert _stored(gf_db) == ["first", *[f"item-{i}" for i in range(120)]]


def test_a_bad_item_fails_alone_and_its_group_is_stored_without_it(gf_db: Database) -> None:
    handler = Recorder(hold=True)
    writer = _writer(gf_db, handler)
    try:
        first = writer.submit("first")
        assert handler.entered.wait(10)
        group = [writer.submit(item) for item in ("a", "bad", "b", "refused", "c")]
        handler.release.set()
        assert first.result(30) == "stored first"
        results: list[str | BaseException] = []
        for future in group:
            error = future.exception(30)
            results.append(error if error is not None else future.result())
    finally:
        writer.close()
    assert [results[i] for i in (0, 2, 4)] == ["stored a", "stored b", "stored c"]
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[3], ValueError)
    # Tried together once, then one by one; "bad" wrote nothing, the rest exactly once.
    assert handler.groups[1] == ["a", "bad", "b", "refused", "c"]
    assert handler.groups[2:] == [["a"], ["bad"], ["b"], ["refused"], ["c"]]
    assert _stored(gf_db) == ["first", "a", "b", "c"]


def test_an_item_whose_caller_gave_up_before_it_was_taken_is_never_written(
    gf_db: Database,
) -> None:
    handler = Recorder(hold=True)
    writer = _writer(gf_db, handler)
    try:
        first = writer.submit("first")
        assert handler.entered.wait(10)
        abandoned = writer.submit("abandoned")
        kept = writer.submit("kept")
        assert abandoned.cancel()
        handler.release.set()
        assert kept.result(30) == "stored kept"
        with pytest.raises(CancelledError):
            abandoned.result(0)
        assert first.result(30) == "stored first"
    finally:
        writer.close()
    assert _stored(gf_db) == ["first", "kept"]


def test_close_commits_what_is_queued_and_then_refuses_more(gf_db: Database) -> None:
    handler = Recorder(hold=True)
    writer = _writer(gf_db, handler, threads=2)
    futures: list[Future[str]] = [writer.submit(f"item-{i}") for i in range(30)]
    assert handler.entered.wait(10)
    closer = threading.Thread(target=writer.close)
    closer.start()
    handler.release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert all(f.result(0).startswith("stored") for f in futures)
    assert sorted(_stored(gf_db)) == sorted(f"item-{i}" for i in range(30))
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("late")


@pytest.mark.parametrize("gf_backend", ["postgres"])
def test_a_group_whose_connection_was_dropped_runs_again_on_a_new_one(gf_db: Database) -> None:
    """A restarted database (here: every other connection terminated) costs the callers
    nothing: the writer notices its connection is gone and runs the group again."""
    handler = Recorder()
    writer = _writer(gf_db, handler)
    try:
        assert writer.submit("before").result(30) == "stored before"
        with gf_db.engine.connect() as admin:
            killed = admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        assert killed, "the writer's connection should have been there to terminate"
        assert writer.submit("after").result(30) == "stored after"
    finally:
        writer.close()
    assert _stored(gf_db) == ["before", "after"]
    assert handler.groups == [["before"], ["after"], ["after"]]  # lost, then run again


def test_a_database_that_cannot_be_reached_fails_the_callers_not_the_writer() -> None:
    """No connection can be opened (nothing listens on the port): each caller gets the
    error, and the writer thread lives on to try again for the next one."""
    unreachable = Database("postgresql+psycopg://nobody:nothing@127.0.0.1:1/none")
    writer = _writer(unreachable, Recorder())
    try:
        for item in ("first", "second"):
            with pytest.raises(OperationalError):
                writer.submit(item).result(30)
    finally:
        writer.close(timeout=30)
        unreachable.dispose()
