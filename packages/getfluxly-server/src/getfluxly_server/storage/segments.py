"""Segments, their members and their transitions in the database.

Membership is written only here, and always with its transitions: every row added to
``segment_members`` writes an ``entered`` transition and every row removed a ``left`` one,
in the same transaction (the caller holds the project's lock, so transition ids commit in
order within a project).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    Select,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from getfluxly_server.storage.models import (
    Event,
    Message,
    MessageEvent,
    Profile,
    Segment,
    SegmentMember,
    SegmentTransition,
    UTCDateTime,
)
from getfluxly_server.storage.paging import newest_first

ENTERED = "entered"
LEFT = "left"


class NameTaken(Exception):  # noqa: N818 - reads as what happened
    """Another live segment of the project has this name (the unique index said so)."""


def get(session: Session, segment_id: str, *, lock: bool = False) -> Segment | None:
    """The segment, deleted or not. ``lock``: hold its row until the transaction ends."""
    return session.get(Segment, segment_id, with_for_update=lock or None)


def save(
    session: Session, segment: Segment, changes: Mapping[str, object] | None = None
) -> Segment:
    """Insert ``segment`` or set ``changes`` on it, in a savepoint; :class:`NameTaken` when
    its name is then a live one's (the caller's transaction stays usable)."""
    try:
        with session.begin_nested():
            for key, value in (changes or {}).items():
                setattr(segment, key, value)
            session.add(segment)
            session.flush()
    except IntegrityError:
        raise NameTaken(segment.name) from None
    return segment


def live_page(
    session: Session, project_id: str, *, limit: int, before: tuple[datetime, str] | None = None
) -> Sequence[Segment]:
    """Up to ``limit`` live segments of the project, newest first (``created_at``, then id),
    after the ``(created_at, id)`` of the previous page's last one."""
    query = select(Segment).where(Segment.project_id == project_id, Segment.deleted_at.is_(None))
    query = newest_first(query, Segment.created_at, Segment.id, limit=limit, before=before)
    return session.scalars(query).all()


def live(session: Session, project_id: str) -> Sequence[Segment]:
    """Every live segment of the project (oldest first)."""
    query = select(Segment).where(Segment.project_id == project_id, Segment.deleted_at.is_(None))
    return session.scalars(query.order_by(Segment.created_at, Segment.id)).all()


def projects_with_segments(session: Session) -> list[str]:
    """The projects that have a live segment."""
    query = select(Segment.project_id).where(Segment.deleted_at.is_(None)).distinct()
    return sorted(session.scalars(query))


def counts(session: Session, segment_ids: Collection[str]) -> dict[str, int]:
    """How many members each segment has now (0 for none)."""
    if not segment_ids:
        return {}
    query = (
        select(SegmentMember.segment_id, func.count())
        .where(SegmentMember.segment_id.in_(segment_ids))
        .group_by(SegmentMember.segment_id)
    )
    found: dict[str, int] = dict.fromkeys(segment_ids, 0)
    found.update({sid: int(n) for sid, n in session.execute(query)})
    return found


def members_page(
    session: Session, segment_id: str, *, limit: int, after: str | None = None
) -> Sequence[SegmentMember]:
    """Up to ``limit`` members, by profile id, after the profile id ``after``."""
    query = select(SegmentMember).where(SegmentMember.segment_id == segment_id)
    if after is not None:
        query = query.where(SegmentMember.profile_id > after)
    return session.scalars(query.order_by(SegmentMember.profile_id).limit(limit)).all()


def members_among(session: Session, segment_id: str, profile_ids: Collection[str]) -> set[str]:
    """Which of ``profile_ids`` are members of the segment now."""
    if not profile_ids:
        return set()
    query = select(SegmentMember.profile_id).where(
        SegmentMember.segment_id == segment_id, SegmentMember.profile_id.in_(profile_ids)
    )
    return set(session.scalars(query))


def enter(
    session: Session, project_id: str, segment_id: str, profile_ids: Collection[str], at: datetime
) -> None:
    """Make ``profile_ids`` (not members now) members: rows and ``entered`` transitions,
    in profile id order."""
    ordered = sorted(profile_ids)
    if not ordered:
        return
    session.execute(
        insert(SegmentTransition),
        [
            {"project_id": project_id, "segment_id": segment_id, "profile_id": p,
             "kind": ENTERED, "at": at}
            for p in ordered
        ],
    )  # fmt: skip
    session.execute(
        insert(SegmentMember),
        [{"segment_id": segment_id, "profile_id": p, "entered_at": at} for p in ordered],
    )


def leave(
    session: Session, project_id: str, segment_id: str, profile_ids: Collection[str], at: datetime
) -> None:
    """Remove ``profile_ids`` (members now) from the segment, each with a ``left``
    transition, in profile id order."""
    ordered = sorted(profile_ids)
    if not ordered:
        return
    session.execute(
        insert(SegmentTransition),
        [
            {"project_id": project_id, "segment_id": segment_id, "profile_id": p,
             "kind": LEFT, "at": at}
            for p in ordered
        ],
    )  # fmt: skip
    session.execute(
        delete(SegmentMember).where(
            SegmentMember.segment_id == segment_id, SegmentMember.profile_id.in_(ordered)
        )
    )


def sync(
    session: Session, project_id: str, segment_id: str, wanted: Select[str], at: datetime
) -> tuple[int, int]:
    """Make the segment's members exactly the profile ids ``wanted`` selects, set-based
    (the full computation of a new or edited segment, the periodic pass): INSERT ... SELECT
    the entries (their transitions, then their rows), then the exits likewise, each in
    profile id order. Returns (entered, left)."""
    want = wanted.subquery("want")
    wanted_id = next(iter(want.c))
    # NOT EXISTS, not NOT IN: PostgreSQL plans it as an anti-join whatever its estimates,
    # where NOT IN over a subquery it guesses too large to hash is a scan per row.
    member = aliased(SegmentMember)
    new = ~(
        select(literal(1))
        .where(member.segment_id == segment_id, member.profile_id == wanted_id)
        .exists()
    )
    stamp = literal(at, UTCDateTime())
    columns = ["project_id", "segment_id", "profile_id", "kind", "at"]
    # RETURNING counts the rows (psycopg reports no rowcount for INSERT ... SELECT here).
    session.flush()
    entered = session.execute(
        insert(SegmentTransition)
        .from_select(
            columns,
            select(literal(project_id), literal(segment_id), wanted_id, literal(ENTERED), stamp)
            .where(new)
            .order_by(wanted_id),
        )
        .returning(SegmentTransition.id)
    ).all()
    session.execute(
        insert(SegmentMember).from_select(
            ["segment_id", "profile_id", "entered_at"],
            select(literal(segment_id), wanted_id, stamp).where(new),
        )
    )
    gone = and_(
        SegmentMember.segment_id == segment_id,
        ~select(literal(1)).select_from(want).where(wanted_id == SegmentMember.profile_id).exists(),
    )
    left = session.execute(
        insert(SegmentTransition).from_select(
            columns,
            select(
                literal(project_id), literal(segment_id), SegmentMember.profile_id,
                literal(LEFT), stamp,
            )
            .where(gone)
            .order_by(SegmentMember.profile_id),
        )
        .returning(SegmentTransition.id)
    ).all()  # fmt: skip
    session.execute(delete(SegmentMember).where(gone))
    return len(entered), len(left)


def leave_gone(
    session: Session, project_id: str, at: datetime, among: Collection[str] | None = None
) -> int:
    """Members whose profile was merged into another or erased leave every segment (of
    the project; only those merged into one of ``among`` when given); how many left."""
    gone = select(Profile.id).where(
        Profile.project_id == project_id,
        or_(Profile.merged_into.is_not(None), Profile.erased_at.is_not(None)),
    )
    if among is not None:
        gone = gone.where(Profile.merged_into.in_(among))
    rows = session.execute(
        select(SegmentMember.segment_id, SegmentMember.profile_id)
        .where(SegmentMember.profile_id.in_(gone))
        .order_by(SegmentMember.segment_id, SegmentMember.profile_id)
    )
    by_segment: dict[str, list[str]] = {}
    for segment_id, profile_id in rows:
        by_segment.setdefault(segment_id, []).append(profile_id)
    for segment_id, profile_ids in by_segment.items():
        leave(session, project_id, segment_id, profile_ids, at)
    return sum(len(p) for p in by_segment.values())


def drop_members(session: Session, segment_id: str) -> None:
    """Forget a deleted segment's members (no transitions: the segment is gone, nobody
    left it)."""
    session.execute(delete(SegmentMember).where(SegmentMember.segment_id == segment_id))


def profile_page(
    session: Session, project_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[tuple[datetime, str]]:
    """The next ``limit`` of the project's profiles (merged and erased ones too: their
    members must leave) in ``(created_at, id)`` order after ``after``, through
    ``ix_profiles_project``: a full recompute walks the project a page at a time."""
    query = select(Profile.created_at, Profile.id).where(Profile.project_id == project_id)
    if after is not None:
        query = query.where(tuple_(Profile.created_at, Profile.id) > tuple_(*after))
    query = query.order_by(Profile.created_at, Profile.id).limit(limit)
    return [(at, str(pid)) for at, pid in session.execute(query)]


def profiles_changed_since(session: Session, project_id: str, since: datetime) -> list[str]:
    """The project's live profiles updated at or after ``since`` (traits, a merge)."""
    query = select(Profile.id).where(
        Profile.project_id == project_id,
        Profile.updated_at >= since,
        Profile.merged_into.is_(None),
        Profile.erased_at.is_(None),
    )
    return list(session.scalars(query))


def crossed_windows(
    session: Session,
    project_id: str,
    windows: Collection[tuple[str, timedelta]],
    since: datetime,
    until: datetime,
) -> list[str]:
    """Profiles with an event named ``name`` that left a window of ``length`` between
    ``since`` and ``until``: timestamp in ``[since - length, until - length)``, for each
    ``(name, length)`` of ``windows``. Only these can enter or leave an event-count segment
    as time alone passes."""
    if not windows:
        return []
    edges = [
        and_(
            Event.name == name, Event.timestamp >= since - length, Event.timestamp < until - length
        )
        for name, length in windows
    ]
    query = (
        select(Event.profile_id)
        .where(Event.project_id == project_id, Event.profile_id.is_not(None), or_(*edges))
        .distinct()
    )
    return [p for p in session.scalars(query) if p is not None]


def crossed_email_windows(
    session: Session,
    project_id: str,
    windows: Collection[tuple[str, timedelta]],
    since: datetime,
    until: datetime,
) -> list[str]:
    """:func:`crossed_windows` for mail activity: the profiles (of the message, moved on
    merges) with a person's (not a machine's) feedback event of type ``activity`` that
    occurred in ``[since - length, until - length)``, for each ``(activity, length)``."""
    if not windows:
        return []
    who = func.coalesce(Message.profile_id, MessageEvent.profile_id)
    edges = [
        and_(
            MessageEvent.type == activity,
            MessageEvent.occurred_at >= since - length,
            MessageEvent.occurred_at < until - length,
        )
        for activity, length in windows
    ]
    query = (
        select(who)
        .select_from(MessageEvent)
        .outerjoin(Message, Message.id == MessageEvent.message_id)
        .where(
            MessageEvent.project_id == project_id,
            MessageEvent.machine.is_(False),
            who.is_not(None),
            or_(*edges),
        )
        .distinct()
    )
    return [p for p in session.scalars(query) if p is not None]
