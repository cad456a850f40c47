"""The shared per-provider limiter's SQL (the rules are ``domain/provider_limits.py``).

Every call runs in the caller's transaction, which should be short and do nothing else: the
provider's state row is locked from :func:`lock_state` until it ends. PostgreSQL locks it
with ``SELECT ... FOR UPDATE`` (other processes taking from the same provider wait for the
commit, processes of other providers do not); SQLite's writers already hold the database's
write lock from BEGIN (see db.py), which serialises them just as safely.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Double,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from getfluxly_server.storage.models import EmailProvider, ProviderConnection, ProviderLimitState

State = ProviderLimitState
Connection = ProviderConnection


@dataclass(frozen=True, slots=True)
class StoredState:
    """A provider's rate state as stored: the per-second bucket's ``tokens`` as of
    ``refilled_at`` and the last hour's grants per minute (``(minute, count)``, oldest
    first)."""

    tokens: float
    refilled_at: float
    hour: tuple[tuple[int, int], ...] = ()


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def relax_durability(session: Session) -> None:
    """PostgreSQL: this transaction's commit does not wait for its log to reach the disk.
    The limiter's transactions are tiny and frequent, so that wait is most of their time; a
    database crash may lose their last few milliseconds (a few messages' worth of rate, or
    a slot recorded as still held until its lease runs out), never a message. SQLite: no
    change (``synchronous=NORMAL`` already commits without a sync under WAL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_ASYNC_COMMIT)


_LOCK: Select[float, float, list[list[int]]] = (
    select(State.tokens, State.refilled_at, State.hour)
    .where(State.provider_id == bindparam("provider"))
    .with_for_update()
)


@functools.cache
def _create_statement(dialect: str) -> Insert:
    """Insert the provider's first state (a full bucket) unless it has one; from the provider
    row, so a deleted provider gets none (and no foreign key error)."""
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    source = select(
        EmailProvider.id,
        bindparam("new_tokens", type_=Double),
        bindparam("new_refilled_at", type_=Double),
        bindparam("new_hour", type_=JSON),
    ).where(EmailProvider.id == bindparam("provider"))
    return (
        insert_(State)
        .from_select(["provider_id", "tokens", "refilled_at", "hour"], source)
        .on_conflict_do_nothing(index_elements=["provider_id"])
    )


def lock_state(session: Session, provider_id: str, initial: StoredState) -> StoredState | None:
    """The provider's state, locked until the transaction ends; created as ``initial`` when
    the provider has none yet. None: there is no such provider (it was deleted; on
    PostgreSQL the transaction can then only be rolled back)."""
    connection = session.connection()
    row = connection.execute(_LOCK, {"provider": provider_id}).first()
    if row is None:
        try:
            connection.execute(
                _create_statement(connection.dialect.name), _values(provider_id, initial)
            )
        except IntegrityError:  # the provider was deleted by a transaction that just ended
            return None
        row = connection.execute(_LOCK, {"provider": provider_id}).first()
        if row is None:
            return None
    tokens, refilled_at, hour = row
    return StoredState(tokens, refilled_at, tuple((int(m), int(c)) for m, c in hour))


_SAVE = (
    update(State)
    .where(State.provider_id == bindparam("provider"))
    .values(
        tokens=bindparam("new_tokens"),
        refilled_at=bindparam("new_refilled_at"),
        hour=bindparam("new_hour"),
    )
)


def save_state(session: Session, provider_id: str, state: StoredState) -> None:
    """Store the state of a provider locked with :func:`lock_state`."""
    session.connection().execute(_SAVE, _values(provider_id, state))


def _values(provider_id: str, state: StoredState) -> dict[str, Any]:
    # (Bind names differ from the column names: SQLAlchemy keeps those for itself.)
    return {
        "provider": provider_id, "new_tokens": state.tokens,
        "new_refilled_at": state.refilled_at, "new_hour": [list(slot) for slot in state.hour],
    }  # fmt: skip


def live_connections(session: Session, provider_id: str, now: float) -> int:
    """How many of the provider's connection slots are held with a lease not yet run out."""
    query = select(func.count()).where(
        Connection.provider_id == provider_id, Connection.lease_until > now
    )
    return int(session.scalar(query) or 0)


def drop_expired(session: Session, provider_id: str, now: float) -> int:
    """Delete the provider's slots whose lease ran out (their holders died or stalled)."""
    result = session.execute(
        delete(Connection).where(
            Connection.provider_id == provider_id, Connection.lease_until <= now
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def add_connections(
    session: Session, provider_id: str, holder: str, lease_until: float, count: int
) -> list[int]:
    """Record ``count`` slots held by ``holder`` until ``lease_until``; their ids."""
    if count <= 0:
        return []
    rows = [{"provider_id": provider_id, "holder": holder, "lease_until": lease_until}] * count
    statement = insert(Connection).returning(Connection.id, sort_by_parameter_order=True)
    return [int(slot_id) for slot_id in session.scalars(statement, rows)]


def renew_connection(
    session: Session, slot_id: int, holder: str, now: float, lease_until: float
) -> bool:
    """Move a slot's lease on to ``lease_until`` if ``holder`` still holds it and its lease
    has not run out (then its capacity may already have gone to another worker)."""
    statement = (
        update(Connection)
        .where(Connection.id == slot_id, Connection.holder == holder, Connection.lease_until > now)
        .values(lease_until=lease_until)
        .returning(Connection.id)
    )
    return session.execute(statement).first() is not None


def delete_connection(session: Session, slot_id: int, holder: str) -> None:
    """Give a slot back (nothing if it is gone already)."""
    session.execute(delete(Connection).where(Connection.id == slot_id, Connection.holder == holder))


def delete_connections_of(session: Session, holder: str) -> int:
    """Give back every slot ``holder`` holds, of every provider; how many."""
    result = session.execute(delete(Connection).where(Connection.holder == holder))
    return int(result.rowcount)  # type: ignore[attr-defined]
