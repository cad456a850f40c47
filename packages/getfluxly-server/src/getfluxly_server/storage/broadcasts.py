"""Broadcasts in the database: their rows, the audience snapshot, and the statements that act
on a broadcast's messages in the ledger (hold them while it is paused, give them back on
resume, withdraw them on cancel, count them by status).

The audience is copied from ``segment_members`` in one ``INSERT ... SELECT`` numbered with
``ROW_NUMBER()`` (both databases have window functions), so a snapshot of 100,000 members is
one statement. A held message is ``queued`` (or ``deferred``) with ``due_at`` NULL: the claim
(``storage/outbox.py``) takes only rows whose ``due_at`` has come, and a NULL never has, so
no worker takes it until :func:`release` gives it a due time again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from getfluxly_server.storage import outbox
from getfluxly_server.storage.models import (
    PENDING_SQL,
    Broadcast,
    BroadcastRecipient,
    BroadcastStatus,
    Message,
    MessageHistory,
    MessagePriority,
    MessageStatus,
    Profile,
    Project,
    Segment,
    SegmentMember,
)
from getfluxly_server.storage.paging import newest_first

#: Statuses of a message a worker may still act on (as ``storage.messages.PENDING``).
PENDING = (MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value, MessageStatus.SENDING.value)
#: Pending messages no worker has started sending: what a pause holds and a cancel withdraws.
WAITING = (MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value)
_ACTIVE = (BroadcastStatus.SCHEDULED.value, BroadcastStatus.SENDING.value)
_PLAIN = {"synchronize_session": False}
#: History rows per INSERT.
_CHUNK = 5_000


def add(session: Session, broadcast: Broadcast) -> Broadcast:
    session.add(broadcast)
    session.flush()
    return broadcast


def get(session: Session, broadcast_id: str, *, lock: bool = False) -> Broadcast | None:
    """The broadcast; ``lock``: hold its row to the end of the transaction (PostgreSQL;
    SQLite's writers are serialised at BEGIN), read afresh."""
    query = select(Broadcast).where(Broadcast.id == broadcast_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).first()


def in_workspace(
    session: Session, workspace_id: str, broadcast_id: str, *, lock: bool = False
) -> Broadcast | None:
    """The broadcast if its project belongs to ``workspace_id`` (``lock`` as :func:`get`)."""
    query = (
        select(Broadcast)
        .join(Project, Project.id == Broadcast.project_id)
        .where(Broadcast.id == broadcast_id, Project.workspace_id == workspace_id)
    )
    if lock:
        query = query.with_for_update(of=Broadcast).execution_options(populate_existing=True)
    return session.scalars(query).first()


def page(
    session: Session,
    project_id: str,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[Broadcast]:
    """Up to ``limit`` of the project's broadcasts, newest first (``created_at``, then id),
    after the ``(created_at, id)`` of the previous page's last."""
    query = select(Broadcast).where(Broadcast.project_id == project_id)
    if status is not None:
        query = query.where(Broadcast.status == status)
    query = newest_first(query, Broadcast.created_at, Broadcast.id, limit=limit, before=before)
    return session.scalars(query).all()


def live_segment(session: Session, project_id: str, segment_id: str) -> Segment | None:
    """The project's segment, if it exists and was not deleted."""
    query = select(Segment).where(
        Segment.id == segment_id, Segment.project_id == project_id, Segment.deleted_at.is_(None)
    )
    return session.scalars(query).first()


# The runner's side.


def active(session: Session, moment: datetime) -> list[str]:
    """Ids of the broadcasts a runner has work for: sending, or scheduled and due at
    ``moment``; oldest first."""
    query = (
        select(Broadcast.id)
        .where(
            Broadcast.status.in_(_ACTIVE),
            or_(
                Broadcast.status == BroadcastStatus.SENDING.value,
                Broadcast.send_at <= moment,
            ),
        )
        .order_by(Broadcast.created_at, Broadcast.id)
    )
    return list(session.scalars(query))


def take(session: Session, broadcast_id: str) -> Broadcast | None:
    """The broadcast, row-locked for this runner's step, if it is scheduled or sending and
    no other runner holds it (PostgreSQL ``SKIP LOCKED``: two worker processes never work on
    one broadcast at once, and neither waits for the other)."""
    query = (
        select(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.status.in_(_ACTIVE))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def snapshot(session: Session, broadcast_id: str, segment_id: str) -> int:
    """Copy the segment's members into the broadcast's audience, numbered from 0 (by
    profile id, so the numbering does not depend on the plan); how many. One statement."""
    position = func.row_number().over(order_by=SegmentMember.profile_id) - 1
    source = select(literal(broadcast_id), position, SegmentMember.profile_id).where(
        SegmentMember.segment_id == segment_id
    )
    result = session.execute(
        insert(BroadcastRecipient).from_select(["broadcast_id", "position", "profile_id"], source),
        execution_options=_PLAIN,
    )
    count = result.rowcount  # type: ignore[attr-defined]
    if count is None or count < 0:  # a driver that does not report it
        count = session.scalar(
            select(func.count()).where(BroadcastRecipient.broadcast_id == broadcast_id)
        )
    return int(count or 0)


@dataclass(frozen=True)
class Member:
    """A recipient of the audience as its profile is now."""

    position: int
    profile_id: str
    email: Any
    erased: bool
    merged_into: str | None


def members(session: Session, broadcast_id: str, start: int, n: int) -> list[Member]:
    """Up to ``n`` recipients from ``position`` ``start`` on, in order, with their profile's
    ``email`` trait. The profiles stay share-locked to the end of the transaction
    (PostgreSQL), so an erasure cannot slip in between this read and the messages recorded
    for them (as ``storage.messages.lock_profile`` does for one recipient)."""
    email = Profile.traits["email"]
    query = (
        select(
            BroadcastRecipient.position,
            BroadcastRecipient.profile_id,
            email,
            Profile.erased_at,
            Profile.merged_into,
        )
        .join(Profile, Profile.id == BroadcastRecipient.profile_id)
        .where(
            BroadcastRecipient.broadcast_id == broadcast_id,
            BroadcastRecipient.position >= start,
            BroadcastRecipient.position < start + n,
        )
        .order_by(BroadcastRecipient.position)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True, of=Profile)
    return [
        Member(row[0], row[1], row[2], row[3] is not None, row[4]) for row in session.execute(query)
    ]


def pending(session: Session, broadcast_id: str) -> int:
    """How many of the broadcast's messages are still pending (queued, deferred, sending).

    Read through the claim's partial index (broadcast priority, pending rows only), so the
    cost is the pending messages of broadcasts, never the ones already sent.
    """
    if session.get_bind().dialect.name == "sqlite":
        # SQLite's planner, without statistics, prefers ix_messages_broadcast (every message
        # of the broadcast, sent ones too); the partial index is named outright.
        return int(session.scalar(_PENDING_SQLITE, {"b": broadcast_id}) or 0)
    query = select(func.count()).where(
        Message.priority == MessagePriority.BROADCAST.value,
        PENDING_SQL,
        Message.broadcast_id == broadcast_id,
    )
    return int(session.scalar(query) or 0)


#: (The predicate is the partial index's, word for word: SQLite matches it by its text.)
_PENDING_SQLITE = text(
    f"SELECT count(*) FROM messages INDEXED BY ix_messages_due "  # noqa: S608 - constants
    f"WHERE priority = {int(MessagePriority.BROADCAST)} AND {PENDING_SQL.text} "
    "AND broadcast_id = :b"
)


@dataclass(frozen=True)
class Tally:
    """A broadcast's progress as one snapshot saw it: its row's counters and its messages
    by status."""

    status: str
    targeted: int
    next_position: int
    skipped: int
    withdrawn: int
    by_status: dict[str, int]


def counts(session: Session, broadcast_ids: Collection[str]) -> dict[str, Tally]:
    """The broadcasts' counters and messages by status (:class:`Tally`), in one statement:
    on PostgreSQL every statement of a READ COMMITTED transaction sees the commits made
    before it, so a row read before the count could be a slice of messages behind it
    (counts that did not add up while sending)."""
    if not broadcast_ids:
        return {}
    fields = (Broadcast.id, Broadcast.status, Broadcast.targeted, Broadcast.next_position,
           Broadcast.skipped, Broadcast.withdrawn)  # fmt: skip
    query = (
        select(*fields, Message.status, func.count(Message.id))
        .select_from(Broadcast)
        .outerjoin(Message, Message.broadcast_id == Broadcast.id)
        .where(Broadcast.id.in_(list(broadcast_ids)))
        .group_by(*fields, Message.status)
    )
    found: dict[str, Tally] = {}
    for broadcast_id, status, targeted, position, skipped, withdrawn, of, n in session.execute(
        query
    ):
        tally = found.get(broadcast_id)
        if tally is None:
            tally = Tally(str(status), targeted, position, skipped, withdrawn, {})
            found[broadcast_id] = tally
        if of is not None:
            tally.by_status[str(of)] = int(n)
    return found


def _waiting(broadcast_id: str) -> Any:
    return and_(
        Message.broadcast_id == broadcast_id,
        Message.priority == MessagePriority.BROADCAST.value,
        Message.status.in_(WAITING),
    )


def _in_id_order(*conditions: Any) -> Any:
    """Messages matching ``conditions``, their rows locked in id order first (PostgreSQL):
    a delivery worker locks the rows of a window in that order too
    (:func:`~getfluxly_server.storage.outbox.lock`), so a pause or a cancel and a worker
    marking a window ``sending`` wait for each other instead of deadlocking (seen by the
    10,000-member pause test: the worker lost, and with it the recorded outcomes of the
    window before, which lapsed to ``unknown``)."""
    locked = select(Message.id).where(*conditions).order_by(Message.id).with_for_update()
    return Message.id.in_(locked)


def hold(session: Session, broadcast_id: str, moment: datetime) -> int:
    """Keep every waiting message of the broadcast from being sent: due never (NULL), and
    taken from a worker that claimed it but has not started sending it (its ``locked_by``
    cleared, so its ``start_sending`` passes it over). Messages already ``sending`` are on
    their way to the relay and finish. How many were held."""
    result = session.execute(
        update(Message)
        .where(_in_id_order(_waiting(broadcast_id), Message.due_at.is_not(None)))
        .values(due_at=None, locked_by=None, lease_until=None, updated_at=moment),
        execution_options=_PLAIN,
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, broadcast_id: str, moment: datetime) -> int:
    """Give the broadcast's held messages back to the workers, due ``moment`` (woken at
    commit). How many."""
    result = session.execute(
        update(Message)
        .where(_waiting(broadcast_id), Message.due_at.is_(None))
        .values(due_at=moment, updated_at=moment),
        execution_options=_PLAIN,
    )
    released = int(result.rowcount)  # type: ignore[attr-defined]
    if released:
        outbox.wake(session)
    return released


def withdraw(session: Session, broadcast_id: str, moment: datetime, detail: str) -> int:
    """Turn the broadcast's waiting messages ``failed`` (never attempted; history entry
    ``detail``); a worker holding one records nothing over it (it no longer holds it).
    How many."""
    result = session.execute(
        update(Message)
        .where(_in_id_order(_waiting(broadcast_id)))
        .values(
            status=MessageStatus.FAILED.value,
            due_at=None,
            locked_by=None,
            lease_until=None,
            last_reply=detail,
            updated_at=moment,
        )
        .returning(Message.id),
        execution_options=_PLAIN,
    )
    ids = list(result.scalars())
    for start in range(0, len(ids), _CHUNK):
        session.execute(
            insert(MessageHistory),
            [
                {"message_id": i, "status": MessageStatus.FAILED.value, "at": moment,
                 "detail": detail}
                for i in ids[start : start + _CHUNK]
            ],
        )  # fmt: skip
    return len(ids)
