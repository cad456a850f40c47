"""Saved segments: create, list, read, change and delete a project's segments, count and
list their members, and count an unsaved rule's.

* A rule is checked with :func:`.rules.parse` (``validation_error`` naming the JSON path of
  the fault, under ``rule``), the automations and broadcasts it names with
  :func:`.references.check` (they must be the project's), and stored as given.
* A new segment, and one whose rule changed (``version`` goes up by one), gets the
  ``segments.compute`` job: its members are computed in full in the background, then kept
  current (:mod:`.membership`). Until the job has run, ``count`` is what was computed before.
* A live segment's name is unique in its project (``segment_name_taken``, 409). A deleted
  segment keeps its row (``deleted_at``: broadcasts and automations that named it still
  read it) and frees its name; its members are forgotten, with no transitions.
* Another tenant's segment is ``not_found``, word for word the answer for an id that does
  not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.segments import references, rules
from getfluxly_server.domain.segments.membership import COMPUTE_SEGMENT, ComputeSegment
from getfluxly_server.domain.tenancy import Principal, display_name, project_of, sees
from getfluxly_server.storage import segment_sql
from getfluxly_server.storage import segments as store
from getfluxly_server.storage.models import Segment, SegmentMember, new_id, now

#: The fields a change may set.
CHANGEABLE = ("name", "rule")


@dataclass(frozen=True)
class SegmentPage:
    """One page of a project's segments, newest first, their member counts, and the cursor
    of the next page."""

    segments: Sequence[Segment]
    counts: Mapping[str, int]
    next_cursor: str | None


@dataclass(frozen=True)
class MemberPage:
    """One page of a segment's members (by profile id) and the cursor of the next page."""

    members: Sequence[SegmentMember]
    next_cursor: str | None


def create(
    session: Session, principal: Principal, project_id: str, *, name: str, rule: Any
) -> Segment:
    """A new segment (version 1) of the project; its members are computed in the background.

    Raises:
        ValidationFailed: a bad name, or a rule fault (its ``field`` is the rule's JSON path).
        DomainError: ``segment_name_taken`` when a live segment has the name.
    """
    project_of(session, principal, project_id)
    checked = display_name(name)
    rules.parse(rule)
    references.check(session, project_id, rule)
    stamp = now()
    row = Segment(
        id=new_id("seg"), project_id=project_id, name=checked, rule=rule, version=1,
        created_at=stamp, updated_at=stamp,
    )  # fmt: skip
    _save(session, row)
    COMPUTE_SEGMENT.enqueue(session, ComputeSegment(segment_id=row.id))
    return row


def find(session: Session, principal: Principal, segment_id: str, *, lock: bool = False) -> Segment:
    """The live segment, if ``principal`` may see it; otherwise ``not_found``."""
    row = store.get(session, segment_id, lock=lock)
    if row is None or row.deleted_at is not None or not sees(session, principal, row.project_id):
        raise NotFound("segment")
    return row


def count(session: Session, segment: Segment) -> int:
    """How many members the segment has now."""
    return store.counts(session, [segment.id])[segment.id]


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> SegmentPage:
    """The project's live segments, newest first, ``limit`` at a time (see :mod:`.paging`)."""
    project_of(session, principal, project_id)
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.live_page(session, project_id, limit=n, before=before),
        limit,
        cursor,
    )
    return SegmentPage(
        segments=rows, counts=store.counts(session, [r.id for r in rows]), next_cursor=next_cursor
    )


def members(
    session: Session,
    principal: Principal,
    segment_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> MemberPage:
    """The segment's members, by profile id, ``limit`` at a time."""
    segment = find(session, principal, segment_id)
    after = paging.decode(cursor, 1)[0] if cursor else None
    rows, last = paging.cut(
        store.members_page(session, segment.id, limit=limit + 1, after=after), limit
    )
    return MemberPage(rows, paging.encode(last.profile_id) if last else None)


def update(
    session: Session, principal: Principal, segment_id: str, changes: Mapping[str, object]
) -> Segment:
    """Apply ``changes`` (name and/or rule). A changed rule adds one to ``version`` and
    gets its members computed again in the background (entries and exits recorded then)."""
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise ValidationFailed(f"{sorted(unknown)[0]} cannot be changed", field=sorted(unknown)[0])
    row = find(session, principal, segment_id, lock=True)
    after: dict[str, object] = {}
    if "name" in changes:
        if changes["name"] is None:
            raise ValidationFailed("name cannot be null", field="name")
        name = display_name(str(changes["name"]))
        if name != row.name:
            after["name"] = name
    if "rule" in changes:
        rules.parse(changes["rule"])
        references.check(session, row.project_id, changes["rule"])
        if changes["rule"] != row.rule:
            after.update(rule=changes["rule"], version=row.version + 1)
    if not after:
        return row
    _save(session, row, {**after, "updated_at": now()})
    if "rule" in after:
        COMPUTE_SEGMENT.enqueue(session, ComputeSegment(segment_id=row.id))
    return row


def delete(session: Session, principal: Principal, segment_id: str) -> Segment:
    """Mark the segment deleted (see the module docstring)."""
    row = find(session, principal, segment_id, lock=True)
    row.deleted_at = now()
    store.drop_members(session, row.id)
    session.flush()
    return row


def preview(
    session: Session, principal: Principal, project_id: str, rule: Any, at: datetime
) -> int:
    """How many of the project's profiles an unsaved rule matches at ``at``."""
    project_of(session, principal, project_id)
    parsed = rules.parse(rule)
    references.check(session, project_id, rule)
    return segment_sql.count_of(session, rules.member_ids(session, project_id, parsed, at))


def _save(session: Session, row: Segment, changes: Mapping[str, object] | None = None) -> Segment:
    name = str((changes or {}).get("name", row.name))
    try:
        return store.save(session, row, changes)
    except store.NameTaken:
        raise DomainError(
            "segment_name_taken",
            f"A segment named {name!r} already exists in this project; choose another "
            "name, or change or delete that segment",
            extra={"field": "name"},
        ) from None
