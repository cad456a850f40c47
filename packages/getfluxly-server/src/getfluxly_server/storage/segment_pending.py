"""Profiles whose sent mail may move them in or out of segments (``segment_pending``), and
the segments' periodic pass's last pass per project (``segment_passes``).

A row of ``segment_pending`` is written when one of the profile's messages is sent, in the
transaction that records it (``domain.segments.sent``): due at once (``due_at`` None) and
when the message leaves each ``within`` window of the project's ``sent`` segments. The
rows are drained in id order, under the project's lock, by ``domain.segments.membership``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.barriers import Barrier
from getfluxly_server.storage.models import Message, SegmentPass, SegmentPending
from getfluxly_server.storage.segment_sql import SENT_OR_LATER


@dataclass(frozen=True)
class SentMail:
    """A message that reached ``sent`` (or later) and has a profile."""

    project_id: str
    profile_id: str
    sent_at: datetime | None


#: The barrier the transactions recording sent mail pass, and the full computation of a
#: segment reading ``sent`` settles (storage/barriers.py; ``domain.segments.sent``).
SENT = Barrier.named(b"sent")


def sent_mail(session: Session, message_ids: Collection[str]) -> list[SentMail]:
    """Those of ``message_ids`` that are sent (or later) and name a profile (primary-key
    lookups). When there are some, the transaction has passed :data:`SENT` (on PostgreSQL
    the lock is taken by this very statement: no round trip more per chunk recorded)."""
    if not message_ids:
        return []
    query = select(Message.project_id, Message.profile_id, Message.sent_at).where(
        Message.id.in_(message_ids),
        Message.profile_id.is_not(None),
        Message.status.in_(SENT_OR_LATER),
    )
    if session.get_bind().dialect.name == "postgresql":
        # Taken once per row found (a shared lock held again is only counted); none found,
        # none needed: the transaction then records nothing a segment could miss.
        query = query.add_columns(func.pg_advisory_xact_lock_shared(SENT.key))
    rows = session.execute(query)
    return [SentMail(row[0], str(row[1]), row[2]) for row in rows]


def add(session: Session, rows: Sequence[tuple[str, str, datetime | None]]) -> None:
    """Add ``(project_id, profile_id, due_at)`` rows (one statement)."""
    if rows:
        session.execute(
            insert(SegmentPending),
            [{"project_id": p, "profile_id": who, "due_at": due} for p, who, due in rows],
        )


def sent_since(session: Session, project_id: str, since: datetime) -> list[tuple[str, datetime]]:
    """``(profile id, sent_at)`` of the project's messages sent (or later) at or after
    ``since`` that name a profile."""
    rows = session.execute(
        select(Message.profile_id, Message.sent_at).where(
            Message.project_id == project_id,
            Message.profile_id.is_not(None),
            Message.status.in_(SENT_OR_LATER),
            Message.sent_at >= since,
        )
    )
    return [(str(who), at) for who, at in rows if at is not None]


def due(session: Session, project_id: str, at: datetime, limit: int) -> list[tuple[int, str]]:
    """Up to ``limit`` of the project's rows due at ``at`` (due at once, or strictly before
    ``at``: a message sent exactly ``within`` ago still counts), oldest first: (id,
    profile id)."""
    query = (
        select(SegmentPending.id, SegmentPending.profile_id)
        .where(
            SegmentPending.project_id == project_id,
            or_(SegmentPending.due_at.is_(None), SegmentPending.due_at < at),
        )
        .order_by(SegmentPending.id)
        .limit(limit)
    )
    return [(int(i), str(p)) for i, p in session.execute(query)]


def remove(session: Session, ids: Collection[int]) -> None:
    if ids:
        session.execute(delete(SegmentPending).where(SegmentPending.id.in_(ids)))


def clear(session: Session, project_id: str) -> int:
    """Delete all of the project's rows, due or not; how many."""
    result = session.execute(delete(SegmentPending).where(SegmentPending.project_id == project_id))
    return int(getattr(result, "rowcount", 0) or 0)


def projects(session: Session) -> list[str]:
    """The projects that have rows."""
    return sorted(session.scalars(select(SegmentPending.project_id).distinct()))


def last_pass(session: Session, project_id: str) -> SegmentPass | None:
    """The project's last periodic pass, if one was recorded."""
    return session.get(SegmentPass, project_id)


def record_pass(
    session: Session, project_id: str, engine_at: datetime, started_at: datetime
) -> None:
    """Record a pass over the project (the engine's time it used, when it began). One
    statement that inserts or replaces: two workers' first passes over a project may finish
    together, and both must succeed."""
    insert_ = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    statement = insert_(SegmentPass).values(
        project_id=project_id, engine_at=engine_at, started_at=started_at
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SegmentPass.project_id],
            set_={"engine_at": engine_at, "started_at": started_at},
        )
    )
