"""Barriers between many writers and a reader that must not miss any of them (PostgreSQL).

Under READ COMMITTED a reader sees what had committed when its statement began. A writer
whose transaction is still open at that moment is invisible to it, and if that writer had
looked (before the reader's own change committed) for something that would have made it
record its work for the reader, the work falls between the two. A :class:`Barrier` closes
the gap: each writer :meth:`~Barrier.passes` it (a transaction-level shared advisory lock,
held until it commits), and the reader, after committing what the writers look for and
before reading what they wrote, :meth:`~Barrier.settle`\\ s: it waits until every writer
under way at that moment has ended. Writers that begin after that see the reader's change.

Writers never wait for one another (the lock is shared), and a settling reader keeps them
out only for the instant it holds the lock (taken and given back in one statement). On
SQLite there is nothing to do: a writer there holds the database's only write lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.orm import Session

_ENTER = "SELECT pg_advisory_xact_lock_shared(%s)"
# Session-level, taken and given back in one statement: it waits for the shared holders of
# the moment only (a transaction-level lock would keep every writer out until commit).
_SETTLE = "SELECT pg_advisory_unlock(k) FROM (SELECT %s::bigint AS k, pg_advisory_lock(%s)) AS s"


@dataclass(frozen=True)
class Barrier:
    """One barrier, named by its advisory lock key (a 64-bit number no other lock uses)."""

    key: int

    @classmethod
    def named(cls, name: bytes) -> Barrier:
        """The barrier whose key is ``name`` (at most 8 bytes) read as a number."""
        if not 0 < len(name) <= 8:
            raise ValueError("a barrier's name is 1 to 8 bytes")
        return cls(int.from_bytes(name, "big"))

    def passes(self, session: Session | Connection) -> None:
        """A writer's transaction passes the barrier: a settling reader waits for it."""
        connection = session.connection() if isinstance(session, Session) else session
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(_ENTER, (self.key,))

    def settle(self, session: Session | Connection) -> None:
        """Wait until every writer that passed and is still under way has ended."""
        connection = session.connection() if isinstance(session, Session) else session
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(_SETTLE, (self.key, self.key))
