"""Group commit: many small writes from many requests share a few transactions.

A request hands its write to :class:`GroupCommit` and waits. A writer thread takes every
write that is waiting (up to a weight limit), runs them together through the handler in one
transaction, commits once, and only then answers each of them. Under load a commit carries
many requests, so the cost of a transaction (BEGIN, COMMIT and its log write, on SQLite the
wait for the single write lock) is paid once per group rather than once per request; with
no load a group is one request and nothing waits for company.

SQLite has one writer at a time anyway, so it is given one writer thread; PostgreSQL a few,
so that one group's statements overlap another's commit. Each thread keeps one connection
(no pool checkout and liveness ping per group); after a failure it opens a new one.

If a group's transaction fails, each of its items runs again alone in a transaction of its
own, so one bad item fails only its own request. A handler may also fail single items
without failing the group by returning an exception in that item's place. If the connection
was lost (the database restarted), the group runs once more on a new connection. Handlers
must therefore be safe to run again after a commit whose outcome was lost with the
connection (ingest is: message ids and idempotency keys make a repeat a no-op).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from getfluxly_server.storage.db import Database

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Runs a group's items in the open transaction; returns one result (or exception) per item.
Handler = Callable[[Session, Sequence[Item]], Sequence[Result | Exception]]


def writer_threads(db: Database) -> int:
    """How many writer threads a group commit on ``db`` should have: one on SQLite (it has
    one writer at a time anyway), two on PostgreSQL (one group's statements overlap the
    other's commit; more only contend for the GIL, measured with bench/ingest_throughput.py)."""
    return 1 if db.is_sqlite else 2


class _ThreadConnection(threading.local):
    """Each writer thread's own connection (None until its first group)."""

    value: Connection | None = None


class GroupCommit(Generic[Item, Result]):
    """A queue of writes and the threads that commit them in groups.

    ``weight(item)`` is what an item costs (e.g. its rows); a group is closed once its weight
    reaches ``max_weight`` (one item heavier than that still runs, alone). Threads start on
    the first :meth:`submit`; :meth:`close` lets them finish what is queued.
    """

    def __init__(
        self,
        db: Database,
        handler: Handler[Item, Result],
        *,
        name: str,
        threads: int,
        max_weight: int,
        weight: Callable[[Item], int] = lambda _item: 1,
    ) -> None:
        self._db = db
        self._handler = handler
        self._name = name
        self._thread_count = threads
        self._max_weight = max_weight
        self._weight = weight
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._connection = _ThreadConnection()

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item``; the future resolves once its group has committed (or failed)."""
        future: Future[Result] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if not self._threads:
                self._start()
            self._queue.put((item, future))
        return future

    async def run(self, item: Item) -> Result:
        """:meth:`submit` for coroutines. If the caller is cancelled before a writer has
        taken the item, the item is dropped (never half-done: it is all in one commit)."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking items, let the threads commit what is queued, and wait for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _start(self) -> None:
        for index in range(self._thread_count):
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        try:
            self._take_groups()
        finally:
            if self._connection.value is not None:
                self._connection.value.close()

    def _take_groups(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            weight = self._weight(first[0])
            while weight < self._max_weight:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # for the next get: this thread ends after the group
                    break
                group.append(more)
                weight += self._weight(more[0])
            # Items whose caller gave up before now are dropped; the rest cannot be cancelled.
            taken = [
                (item, future) for item, future in group if future.set_running_or_notify_cancel()
            ]
            if taken:
                self._commit(taken)

    def _commit(
        self, taken: list[tuple[Item, Future[Result]]], *, reconnected: bool = False
    ) -> None:
        try:
            # Connecting is inside the try: a database that cannot be reached fails this
            # group's callers, not the writer thread (which would leave every caller waiting).
            if self._connection.value is None:
                self._connection.value = self._db.engine.connect()
            with self._db.transaction(self._connection.value) as session:
                results = self._handler(session, [item for item, _ in taken])
                if len(results) != len(taken):
                    raise RuntimeError(f"{self._name}: the handler answered the wrong count")
        except Exception as exc:
            # The connection may be what failed (a restarted database): start afresh.
            if self._connection.value is not None:
                self._connection.value.close()
                self._connection.value = None
            if not reconnected and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The database went away (restart, failover, a dropped idle connection): the
                # same group once more on a new connection, so that callers never see it.
                self._commit(taken, reconnected=True)
                return
            if len(taken) == 1:
                taken[0][1].set_exception(exc)
                return
            for one in taken:  # find the item that failed: each alone now
                self._commit([one])
            return
        for (_, future), result in zip(taken, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
