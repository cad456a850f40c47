"""The database handle: one engine per process, sessions as transactions.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so
an API process and its workers share one file safely; PostgreSQL is used through psycopg 3.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.orm import Session, sessionmaker


class Database:
    """An engine and its session factory. ``with db.transaction() as s:`` commits on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _ensure_sqlite_file(url)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30}, **_JSON_CODEC)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
            # SQLite lets one writer in at a time; the others wait in its busy handler, which
            # polls with sleeps of up to 100 ms. Writers of this process queue on this lock
            # instead and get the database the moment it is free, in the order they came.
            # (Other processes still meet at SQLite's own lock.) Re-entrant, so a nested
            # write fails as it would without the lock (busy timeout) rather than hanging.
            self._write_lock: AbstractContextManager[object] = FairLock()
        else:
            self.engine = create_engine(
                url, pool_pre_ping=True, pool_size=10, max_overflow=20, **_JSON_CODEC
            )
            self._write_lock = nullcontext()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(read_only=True), expire_on_commit=False
        )

    @contextmanager
    def transaction(self, connection: Connection | None = None) -> Iterator[Session]:
        """A session in one transaction: committed if the block succeeds, else rolled back.

        ``connection``: run on this connection rather than one from the pool (a writer that
        keeps its own, see group_commit.py).
        """
        bind = {} if connection is None else {"bind": connection}
        with self._write_lock, self._sessions(**bind) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only (on SQLite it does not take the write lock)."""
        with self._readers() as session, session.begin():
            yield session

    def checkpoint(self) -> None:
        """SQLite: move the WAL into the database file and empty it (after an erasure, so old
        row versions do not stay in the log); nothing on PostgreSQL."""
        if self.is_sqlite:
            # Outside any transaction (a checkpoint cannot run inside one); if readers hold
            # the log, SQLite checkpoints what it can and the rest goes at the next one.
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def dispose(self) -> None:
        self.engine.dispose()


class FairLock:
    """A re-entrant lock handed to its waiters first come, first served.

    ``threading.RLock`` lets the thread that releases it take it again at once, before the
    woken waiter runs: a writer that commits chunk after chunk (event stitching) would keep
    the database from the delivery threads for as long as it has chunks. Here a release
    with waiters hands the lock to the longest waiting one."""

    _HANDED = object()  # the owner between a hand-over and the new owner's waking

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: object = None
        self._depth = 0
        self._waiters: deque[threading.Lock] = deque()

    def __enter__(self) -> FairLock:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return self
            if self._owner is None:
                self._owner, self._depth = me, 1
                return self
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        try:
            gate.acquire()  # released by the owner that hands the lock over
        except BaseException:  # (interrupted while waiting: leave the queue, or pass it on)
            with self._mutex:
                if gate in self._waiters:
                    self._waiters.remove(gate)
                    raise
                self._owner, self._depth = me, 1
            self.__exit__()
            raise
        with self._mutex:
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                self._owner = self._HANDED
                self._waiters.popleft().release()
            else:
                self._owner = None


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


#: JSON columns through orjson: several times faster than the json module, and events carry
#: three JSON columns each.
_JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock at BEGIN, so two transactions that read then write never
    # deadlock upgrading their locks; readers use a plain (deferred) BEGIN under WAL.
    if conn.get_execution_options().get("read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        _begin_immediate(conn)


#: How long a writer waits for the write lock another process holds, and how long it sleeps
#: between tries (doubling from the first to the last).
_LOCK_WAIT_SECONDS = 30.0
_LOCK_NAPS = (0.0002, 0.002)


def _begin_immediate(conn: Any) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock in short naps. SQLite's own
    busy handler sleeps up to 100 ms between tries, so a writer of one process (the API's
    ingest writer) and those of another (the worker's) sharing the file would wait in turns
    of tens of milliseconds each, and every writer queued behind it in its process with it;
    the busy timeout still covers every other wait (it is off only for this BEGIN)."""
    raw = conn.connection.driver_connection
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    nap, most = _LOCK_NAPS
    raw.execute("PRAGMA busy_timeout=0")  # (a pragma costs microseconds: no I/O)
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() > deadline:
                    # As SQLAlchemy wraps what its own statements raise: callers (the API's
                    # 503 for a busy database, the loops' retries) know only its exceptions.
                    raise sqlalchemy_exc.OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(nap)
            nap = min(most, nap * 2)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(_LOCK_WAIT_SECONDS * 1000)}")


def _locked(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(exc)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite opens transactions itself unless told not to; SQLAlchemy's "begin" event above
    # issues BEGIN IMMEDIATE instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(_LOCK_WAIT_SECONDS * 1000)}")
    # Erased personal data must not linger in freed pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _ensure_sqlite_file(url: str) -> None:
    """Create the database file (and a missing directory) readable by its owner only, as
    the encryption key is: it holds personal data and key hashes. SQLite creates the
    ``-wal`` and ``-shm`` files with the database file's permissions, so they follow. An
    existing file is left as the operator set it."""
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    file = Path(path)
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
