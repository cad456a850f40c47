"""Running the server's due jobs in the test's own process, at the moment the test chooses.

Tests that start ``getfluxly api`` (no worker threads) queue work through the API and then
call the drain, so what a job did can be checked right after it ran, without waiting for a
worker's poll.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text

from getfluxly_server.domain import ingest_jobs
from getfluxly_server.queue.worker import Worker
from getfluxly_server.storage.db import Database

#: Runs every due job; returns how many ran.
Drain = Callable[[], int]


def ingest_drain(db: Database) -> Drain:
    """A drain of the ingest jobs (event stitching, identity merges, erasures) of ``db``,
    with the server's own handlers on one thread. Each call runs jobs until none is due and
    fails (``AssertionError`` naming the kind and error) when any job has recorded an error,
    so a broken handler cannot pass for an empty queue."""
    worker = Worker(db, ingest_jobs.handlers(db), threads=1)

    def run() -> int:
        ran = 0
        while worker.run_once():
            ran += 1
        with db.read() as session:
            failed = session.execute(
                text("SELECT kind, last_error FROM jobs WHERE last_error IS NOT NULL")
            ).all()
        assert not failed, [tuple(row) for row in failed]
        return ran

    return run
