"""storage.segment_pending.record_pass: the periodic pass's last pass per project, written by
every worker process. Two workers' first passes over a project may both find no row and
record together; both must succeed, and the later one's pass is what stays."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from flux_testkit import ledger
from flux_testkit.gfserver import GFDatabase
from flux_testkit.waiting import eventually
from getfluxly_server.storage import segment_pending
from getfluxly_server.storage.db import Database

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_two_first_passes_recorded_at_once_both_succeed(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = ledger.make_project(gf_db, gf_database.workspace.id)
    failures: list[BaseException] = []
    first_recorded = threading.Event()

    def second() -> None:
        try:
            first_recorded.wait(30)
            with gf_db.transaction() as session:
                # PostgreSQL: waits on the first's uncommitted row; SQLite: for its lock.
                segment_pending.record_pass(session, project_id, T0 + timedelta(1), T0)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    with gf_db.transaction() as session:
        assert segment_pending.last_pass(session, project_id) is None
        if gf_database.backend == "postgres":
            later = threading.Thread(target=second)
            later.start()
        segment_pending.record_pass(session, project_id, T0, T0)
        first_recorded.set()
        if gf_database.backend == "postgres":  # commit only once the second waits on our row
            eventually(lambda: gf_database.lock_waiters() >= 1, "the second pass to wait")
    if gf_database.backend == "postgres":
        later.join(30)
    else:
        second()
    assert failures == []
    with gf_db.read() as session:
        found = segment_pending.last_pass(session, project_id)
    assert found is not None
    assert found.engine_at == T0 + timedelta(1)
