"""The durable job queue's SQL: enqueue inside the caller's transaction, claim with a lease.

Claiming is one short transaction. PostgreSQL locks the chosen row with ``FOR UPDATE SKIP
LOCKED``, so any number of workers on any number of machines claim different jobs without
waiting on each other; SQLite takes its single write lock at BEGIN (see db.py), which
serialises claims just as safely. A claimed job carries a lease: if its worker dies, the lease
runs out and the job becomes claimable again.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import QUEUED, Job, now


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    max_attempts: int = 5,
) -> Job:
    """Add a job in the caller's transaction: workers see it only once that commits."""
    job = Job(kind=kind, payload=payload, run_at=run_at or now(), max_attempts=max_attempts)
    session.add(job)
    session.flush()
    return job


def enqueue_once(session: Session, kind: str, payload: dict[str, Any], unique_key: str) -> None:
    """Enqueue unless a job with ``unique_key`` is already waiting: one pass of it will serve
    every request that asked (e.g. "process this project's new events").

    One statement against the partial unique index on queued jobs, so two transactions that
    ask at once still leave one job (the second waits for the first to commit, then skips).
    """
    session.connection().execute(
        _enqueue_once_statement(session.get_bind().dialect.name),
        {"kind": kind, "payload": payload, "unique_key": unique_key},
    )


@functools.cache
def _enqueue_once_statement(dialect: str) -> Insert:
    # Built once per dialect: enqueue_once runs in every ingest transaction. The predicate
    # is literal SQL: PostgreSQL must match it to the index's own, which it cannot do for a
    # bound parameter once psycopg prepares the statement.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(Job)
        .values(
            kind=bindparam("kind"), payload=bindparam("payload"), unique_key=bindparam("unique_key")
        )
        .on_conflict_do_nothing(index_elements=["unique_key"], index_where=QUEUED)
    )


def claim(session: Session, worker: str, kinds: list[str], lease: timedelta) -> Job | None:
    """Take the next due job (or one whose lease ran out) for ``worker``, or None."""
    moment = now()
    due = or_(
        (Job.status == "queued") & (Job.run_at <= moment),
        (Job.status == "running") & (Job.lease_until < moment),
    )
    query = select(Job).where(due, Job.kind.in_(kinds)).order_by(Job.run_at, Job.id).limit(1)
    job = session.scalars(query.with_for_update(skip_locked=True)).first()
    if job is None:
        return None
    job.status = "running"
    job.attempts += 1
    job.locked_by = worker
    job.lease_until = moment + lease
    return job


def extend(session: Session, job_id: int, worker: str, lease: timedelta) -> bool:
    """Renew a running job's lease; False if another worker has taken it over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker, Job.status == "running")
        .values(lease_until=now() + lease)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(
    session: Session,
    job_id: int,
    worker: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """Record a job's end (done, failed, or queued again for ``retry_at``).

    Only the worker that holds the lease may finish it; returns False otherwise (a worker
    that outlived its lease must not overwrite the work of the one that took over).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.locked_by != worker or job.status != "running":
        return False
    job.locked_by, job.lease_until = None, None
    job.last_error = error
    if retry_at is not None:
        job.status, job.run_at = "queued", retry_at
        return True
    job.status = "failed" if error is not None else "done"
    job.result = result
    job.finished_at = now()
    return True


def get(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)
