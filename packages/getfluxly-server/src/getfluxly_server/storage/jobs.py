"""The durable job queue's SQL: enqueue inside the caller's transaction, claim in batches
with a lease, finish, sweep old finished jobs, and (PostgreSQL) wake idle workers.

Claiming is one short transaction. PostgreSQL locks the chosen rows with ``FOR UPDATE SKIP
LOCKED``, so any number of workers on any number of machines claim different jobs without
waiting on each other; SQLite takes its single write lock at BEGIN (see db.py), which
serialises claims just as safely. A claimed job carries a lease: if its worker dies, the lease
runs out and the job becomes claimable again.

This module knows kinds only as names and payloads only as JSON objects; the typed layer
(payload models, queues, retry policies) is ``queue/kinds.py``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    TextClause,
    bindparam,
    delete,
    event,
    exists,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.dml import ReturningInsert

from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    DEFAULT_PRIORITY,
    FINISHED_SQL,
    QUEUED,
    RUNNING,
    Job,
    JobStatus,
    now,
)

log = logging.getLogger("getfluxly.jobs")

#: The PostgreSQL channel on which enqueues are announced (the payload is the job's kind).
CHANNEL = "getfluxly_jobs"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """What a worker needs of a job it has claimed (a plain value, usable after the claim's
    transaction has ended). ``attempts`` counts this attempt."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    max_attempts: int = 5,
    priority: int = DEFAULT_PRIORITY,
) -> Job:
    """Add a job in the caller's transaction: workers see it only once that commits."""
    job = Job(
        kind=kind, payload=payload, run_at=run_at or now(), max_attempts=max_attempts,
        priority=priority,
    )  # fmt: skip
    session.add(job)
    session.flush()
    _notify(session, kind)
    return job


def enqueue_many(
    session: Session,
    kind: str,
    payloads: Iterable[dict[str, Any]],
    *,
    run_at: datetime | None = None,
    max_attempts: int = 5,
    priority: int = DEFAULT_PRIORITY,
) -> int:
    """Add one job per payload in the caller's transaction (a broadcast's fan-out), set-based;
    returns how many. One wake-up for all of them."""
    created = now()
    rows = [
        {"kind": kind, "payload": payload, "run_at": run_at or created,
         "max_attempts": max_attempts, "priority": priority, "created_at": created}
        for payload in payloads
    ]  # fmt: skip
    if rows:  # SQLAlchemy sends these as multi-row INSERTs ("insertmanyvalues")
        session.execute(insert(Job), rows)
        _notify(session, kind)
    return len(rows)


def enqueue_once(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    unique_key: str,
    *,
    max_attempts: int = 5,
    priority: int = DEFAULT_PRIORITY,
    run_at: datetime | None = None,
) -> bool:
    """Enqueue unless a job with ``unique_key`` is already waiting: one pass of it will serve
    every request that asked (e.g. "process this project's new events"). Returns whether a
    job was added. ``run_at`` (default now) is when an added job becomes due; a job already
    waiting keeps its own.

    One statement against the partial unique index on queued jobs, so two transactions that
    ask at once still leave one job (the second waits for the first to commit, then skips).
    """
    result = session.connection().execute(
        _enqueue_once_statement(session.get_bind().dialect.name),
        {"kind": kind, "payload": payload, "unique_key": unique_key,
         "max_attempts": max_attempts, "priority": priority, "run_at": run_at or now()},
    )  # fmt: skip
    added = result.first() is not None  # RETURNING: rowcount is not reliable on psycopg
    if added:  # a job already waiting needs no second wake-up (ingest calls this per batch)
        _notify(session, kind)
    return added


@functools.cache
def _enqueue_once_statement(dialect: str) -> ReturningInsert[int]:
    # Built once per dialect: enqueue_once runs in every ingest transaction. The predicate
    # is literal SQL: PostgreSQL must match it to the index's own, which it cannot do for a
    # bound parameter once psycopg prepares the statement.
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert_(Job)
        .values(
            kind=bindparam("kind"),
            payload=bindparam("payload"),
            unique_key=bindparam("unique_key"),
            max_attempts=bindparam("max_attempts"),
            priority=bindparam("priority"),
            run_at=bindparam("run_at"),
        )
        .on_conflict_do_nothing(index_elements=["unique_key"], index_where=QUEUED)
        .returning(Job.id)
    )


_NOTIFY = text("SELECT pg_notify(:channel, :kind)")

#: SQLite has no notifications. After a commit that enqueued, the workers of the committing
#: process are woken by these callbacks (by engine), and those of every other process on the
#: same database file through the wake-up channel beside it (:class:`_Channel`); polling stays
#: the fallback.
#: A waker: the function, and the kinds it is for (None: every kind).
_Waker = tuple[Callable[[], None], frozenset[str] | None]
_local_wakers: dict[Engine, list[_Waker]] = {}
_local_lock = threading.Lock()
_WAKE_KINDS = "jobs_wake_kinds"  # session.info: the kinds this transaction announces


def _notify(session: Session, kind: str) -> None:
    # NOTIFY is transactional: PostgreSQL delivers it when this transaction commits and drops
    # it on rollback, so a woken worker always finds the job (the outbox holds for wake-ups
    # too). Identical notifications of one transaction are delivered once.
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(_NOTIFY, {"channel": CHANNEL, "kind": kind})
    elif (kinds := session.info.get(_WAKE_KINDS)) is not None:  # SQLite: after the commit
        kinds.add(kind)
    else:
        session.info[_WAKE_KINDS] = {kind}
        engine = bind.engine if isinstance(bind, Connection) else bind
        wake = functools.partial(_wake_local, engine)
        event.listen(session, "after_commit", wake, once=True)
        event.listen(session, "after_rollback", _forget_kinds, once=True)


def _forget_kinds(session: Session) -> None:
    # (A rollback announces nothing; if the session committed first, there is nothing here.)
    session.info.pop(_WAKE_KINDS, None)


def wake_workers(session: Session, kind: str) -> None:
    """Wake idle workers of every process once this transaction commits, for work that is not
    a job row: messages due for delivery."""
    _notify(session, kind)


def _wake_local(engine: Engine, session: Session) -> None:
    kinds = frozenset(session.info.pop(_WAKE_KINDS, ()))
    channel = _Channel.of(engine)
    if channel is None:
        _wake_here([engine], kinds)
        return
    _wake_here(channel.engines, kinds)
    channel.announce(kinds)


def _wake_here(engines: Iterable[Engine], kinds: frozenset[str] | None) -> None:
    """Call the wakers of ``engines`` (this process's handles on one database file) that are
    for one of ``kinds`` (None: all of them)."""
    with _local_lock:
        wakers = [
            wake
            for engine in engines
            for wake, wanted in _local_wakers.get(engine, ())
            if wanted is None or kinds is None or not wanted.isdisjoint(kinds)
        ]
    for wake in wakers:
        wake()


def on_local_enqueue(
    db: Database, wake: Callable[[], None], kinds: Iterable[str] | None = None
) -> Callable[[], None]:
    """SQLite: call ``wake`` after each commit that enqueued a job (or woke workers) of one
    of ``kinds`` (default: of any kind) in ``db``, in this process or another one on the same
    file (it must not block: it runs in the committing thread, or in the channel's listening
    thread). Returns the function that stops it. Nothing on PostgreSQL, where
    :func:`listening` hears every process.

    ``kinds`` matters on SQLite, whose writers take turns: a loop woken for work that is not
    its own would only queue one more transaction for the write lock."""
    if not db.is_sqlite:
        return lambda: None
    waker: _Waker = (wake, None if kinds is None else frozenset(kinds))
    with _local_lock:
        _local_wakers.setdefault(db.engine, []).append(waker)
    channel = _Channel.of(db.engine)
    if channel is not None:
        channel.listen()

    def stop() -> None:
        with _local_lock:
            wakers = _local_wakers.get(db.engine, [])
            if waker in wakers:
                wakers.remove(waker)
            if not wakers:
                _local_wakers.pop(db.engine, None)
        if channel is not None:
            channel.unlisten()

    return stop


class _Channel:
    """SQLite's wake-ups across processes: a directory beside the database file
    (``<file>-wake``, its owner's only) holding one Unix datagram socket per process whose
    workers listen. A commit that enqueued sends the kinds it announces (comma-separated) to
    every socket there but its own
    (never blocking: a socket whose queue is full has a wake-up waiting already); a socket
    nobody reads any more (its process died) is removed by the first sender that finds it so.
    The channel only hastens what polling would find: a lost wake-up costs a poll interval,
    never a job.

    Socket paths are reached through ``/proc/self/fd`` when the full path is longer than a
    Unix socket address may be (Linux); elsewhere such a database falls back to polling.
    """

    _by_path: ClassVar[dict[str, _Channel]] = {}
    _by_engine: ClassVar[weakref.WeakKeyDictionary[Engine, _Channel | None]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _MAX_ADDRESS: ClassVar[int] = 100  # sun_path holds 108 bytes on Linux, 104 on the BSDs

    def __init__(self, engine: Engine, directory: Path) -> None:
        #: This process's engines on the file (a wake-up received wakes all their wakers).
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet([engine])
        self.directory = directory
        self._dir_fd: int | None = None
        self._listeners = 0
        self._socket: socket.socket | None = None
        self._name: str | None = None
        self._sender: socket.socket | None = None
        self._state = threading.Lock()

    @classmethod
    def of(cls, engine: Engine) -> _Channel | None:
        """The channel of ``engine``'s database file; None for an in-memory database or where
        there are no Unix sockets."""
        try:
            return cls._by_engine[engine]  # (asked after every commit that enqueued)
        except KeyError:
            channel = cls._by_engine[engine] = cls._for(engine)
            return channel

    @classmethod
    def _for(cls, engine: Engine) -> _Channel | None:
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        if not hasattr(socket, "AF_UNIX"):
            return None
        path = str(Path(database).resolve())
        with cls._lock:
            channel = cls._by_path.get(path)
            if channel is None:
                channel = cls._by_path[path] = cls(engine, Path(f"{path}-wake"))
            channel.engines.add(engine)
            return channel

    @classmethod
    def forget_all(cls) -> None:
        """In a forked child: none of the parent's channels (its sockets, its listening
        thread, which did not come along) is this process's."""
        cls._by_path, cls._by_engine = {}, weakref.WeakKeyDictionary()
        cls._lock = threading.Lock()

    def _address(self, name: str) -> str | None:
        full = str(self.directory / name)
        if len(full.encode()) <= self._MAX_ADDRESS:
            return full
        if self._dir_fd is None:
            if not Path("/proc/self/fd").is_dir():
                return None
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def listen(self) -> None:
        """Receive wake-ups (counted: the socket lives while anyone in this process listens)."""
        with self._state:
            self._listeners += 1
            if self._socket is not None:
                return
            try:
                self.directory.mkdir(mode=0o700, exist_ok=True)
                name = f"{os.getpid()}-{secrets.token_hex(4)}"
                address = self._address(name)
                if address is None:
                    return
                receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                receiver.bind(address)
            except OSError:
                log.warning("no wake-ups across processes for %s; polling", self.directory,
                            exc_info=True)  # fmt: skip
                return
            self._socket, self._name = receiver, name
        threading.Thread(
            target=self._receive, args=(receiver,), name="jobs-wake", daemon=True
        ).start()

    def unlisten(self) -> None:
        with self._state:
            self._listeners -= 1
            if self._listeners > 0 or self._socket is None:
                return
            receiver, name = self._socket, self._name
            self._socket = self._name = None
        with contextlib.suppress(OSError):
            (self.directory / (name or "")).unlink()
        # shutdown() ends the receiving thread's recv at once (close() alone may not).
        with contextlib.suppress(OSError):
            receiver.shutdown(socket.SHUT_RDWR)
        receiver.close()

    def _receive(self, receiver: socket.socket) -> None:
        while True:
            try:
                data = receiver.recv(64)
            except OSError:
                return
            if not data:  # shut down
                return
            kinds = None if data == b"*" else frozenset(data.decode("ascii", "replace").split(","))
            _wake_here(list(self.engines), kinds)

    def announce(self, kinds: frozenset[str]) -> None:
        """Wake the other processes' listeners for ``kinds`` (see the class docstring)."""
        message = ",".join(sorted(kinds)).encode("ascii", "replace") or b"*"
        if len(message) > 2048:  # (a datagram that size always goes; this one need not)
            message = b"*"
        try:
            names = [entry.name for entry in self.directory.iterdir()]
        except OSError:
            return  # nobody has listened on this file yet
        own = self._name
        for name in names:
            if name == own:
                continue
            address = self._address(name)
            if address is None:
                return
            try:
                with self._state:
                    if self._sender is None:
                        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        self._sender.setblocking(False)
                    self._sender.sendto(message, address)
            except BlockingIOError:
                continue  # its queue is full: it has wake-ups waiting already
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):  # its process is gone
                    (self.directory / name).unlink()
            except OSError:
                log.debug("wake-up to %s not sent", name, exc_info=True)


def claim(
    session: Session,
    worker: str,
    limits: Mapping[str, int],
    lease: timedelta,
    n: int = 1,
) -> list[ClaimedJob]:
    """Take up to ``n`` due jobs for ``worker``: queued ones whose run_at has come and running
    ones whose lease ran out, by priority then due time, at most ``limits[kind]`` of each kind
    (kinds not in ``limits`` are never taken). Each is marked running, leased until now +
    ``lease``, its attempt counted. Returned in claim order.

    Per-kind limits are applied in passes: a pass reads the next due jobs of the kinds that
    still have room; if it met a kind that is now full, the next pass reads again without that
    kind, so a full kind's backlog never hides another kind's due jobs. Jobs read but not taken
    were only locked, and are free again when the transaction ends.
    """
    moment = now()
    room = {kind: limit for kind, limit in limits.items() if limit > 0}
    claimed: list[ClaimedJob] = []
    while len(claimed) < n and room:
        wanted = n - len(claimed)
        taken: list[int] = []
        skipped = False
        for row in _due(session, list(room), wanted, moment):
            if room.get(row.kind, 0) > 0 and len(taken) < wanted:
                taken.append(row.id)
                room[row.kind] -= 1
            else:
                skipped = True
        claimed += _take(session, taken, worker, moment + lease)
        room = {kind: left for kind, left in room.items() if left > 0}
        if not skipped:  # every due job read was taken: there is no more, or n is reached
            break
    return claimed


def _due(session: Session, kinds: list[str], n: int, moment: datetime) -> list[Row[Any]]:
    """The first ``n`` due jobs of ``kinds`` in claim order, locked (PostgreSQL: rows another
    claimer holds are skipped, not waited for)."""
    queued, expired = _DUE
    params = {"kinds": kinds, "n": n, "moment": moment}
    connection = session.connection()
    rows = [*connection.execute(queued, params), *connection.execute(expired, params)]
    rows.sort(key=lambda row: (row.priority, row.run_at, row.id))
    return rows[:n]


def _due_statement(
    state: TextClause, since: QueryableAttribute[Any]
) -> Select[int, str, int, datetime]:
    # Built once, parameters bound at each claim: constructing statements costs more than
    # running these ones (a claim of one job is most of the time Python, not SQL).
    return (
        select(Job.id, Job.kind, Job.priority, Job.run_at)
        .where(
            state, since <= bindparam("moment"), Job.kind.in_(bindparam("kinds", expanding=True))
        )
        .order_by(Job.priority, Job.run_at, Job.id)
        .limit(bindparam("n"))
        .with_for_update(skip_locked=True)
    )


#: Two reads, each walking its own partial index (ix_jobs_due, ix_jobs_leased) in order and
#: stopping after n rows; one read with an OR over both states would sort every due row
#: instead. The state predicates are literal SQL, the partial indexes' own (models.QUEUED).
_DUE = (_due_statement(QUEUED, Job.run_at), _due_statement(RUNNING, Job.lease_until))

_TAKE = (
    update(Job)
    .where(Job.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=JobStatus.RUNNING,
        attempts=Job.attempts + 1,
        locked_by=bindparam("worker"),
        lease_until=bindparam("lease_until"),
    )
    .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
)


def _take(
    session: Session, ids: Sequence[int], worker: str, lease_until: datetime
) -> list[ClaimedJob]:
    if not ids:
        return []
    rows = session.connection().execute(
        _TAKE, {"ids": list(ids), "worker": worker, "lease_until": lease_until}
    )
    by_id = {row.id: ClaimedJob(*row) for row in rows}
    return [by_id[job_id] for job_id in ids]  # RETURNING has no order of its own


def extend(session: Session, worker: str, lease: timedelta, job_ids: Collection[int]) -> int:
    """Renew the leases of these jobs while ``worker`` still holds them; how many it does (a
    job another worker took over after a lapsed lease is left alone)."""
    result = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.locked_by == worker, Job.status == JobStatus.RUNNING)
        .values(lease_until=now() + lease)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


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
    if job is None or job.locked_by != worker or job.status != JobStatus.RUNNING:
        return False
    job.locked_by, job.lease_until = None, None
    job.last_error = error
    if retry_at is not None and _requeue(session, job, retry_at):
        return True
    job.status = JobStatus.FAILED if error is not None else JobStatus.DONE
    job.result = result
    job.finished_at = now()
    return True


def _requeue(session: Session, job: Job, retry_at: datetime) -> bool:
    """Queue ``job`` again; False when an equal job (same unique_key) is queued already, which
    will do the same work, so this one ends instead of breaking the one-queued-per-key index."""
    if job.unique_key is None:
        job.status, job.run_at = JobStatus.QUEUED, retry_at
        return True
    twin = exists().where(Job.unique_key == job.unique_key, Job.status == JobStatus.QUEUED)
    if session.scalar(select(twin)):
        job.last_error = f"{job.last_error} (not retried: an equal job is queued)"
        return False
    try:
        # A savepoint: on PostgreSQL an equal job may be enqueued by a transaction that has
        # not committed yet; the index then refuses this one, and only the savepoint rolls back.
        with session.begin_nested():
            job.status, job.run_at = JobStatus.QUEUED, retry_at
            session.flush()
    except IntegrityError:
        job.last_error = f"{job.last_error} (not retried: an equal job is queued)"
        return False
    return True


def delete_finished(session: Session, before: datetime, batch: int = 10_000) -> int:
    """Delete up to ``batch`` jobs that finished (done or failed for good) before ``before``;
    how many. Callers loop, a transaction per call, so one sweep never holds SQLite's write
    lock for long."""
    oldest = (
        select(Job.id)
        .where(FINISHED_SQL, Job.finished_at < before)
        .order_by(Job.finished_at)
        .limit(batch)
    )
    result = session.execute(delete(Job).where(Job.id.in_(oldest.scalar_subquery())))
    return int(result.rowcount)  # type: ignore[attr-defined]


def get(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


class Wakeups(Protocol):
    def __call__(self, timeout: float) -> bool:
        """Block until a job is enqueued (True) or ``timeout`` seconds pass (False)."""
        ...


@contextmanager
def listening(db: Database) -> Iterator[Wakeups]:
    """PostgreSQL: listen for enqueues on a connection of its own (held while the block
    runs) and yield a function that waits for the next one. Raises on SQLite, which has no
    notifications (its workers poll)."""
    if db.is_sqlite:
        raise RuntimeError("SQLite has no LISTEN/NOTIFY; poll instead")
    # Taken out of the pool for good: it is switched to autocommit (LISTEN takes effect at
    # once, and notifications arrive between transactions only) and is closed afterwards.
    pooled = db.engine.raw_connection()
    connection: psycopg.Connection[Any] | None = pooled.driver_connection
    assert connection is not None  # a connection just checked out has its driver's
    pooled.detach()
    try:
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANNEL}")

        def wait(timeout: float) -> bool:
            return any(True for _ in connection.notifies(timeout=timeout, stop_after=1))

        yield wait
    finally:
        connection.close()  # (closing a detached pool entry would leave it open)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Channel.forget_all)
