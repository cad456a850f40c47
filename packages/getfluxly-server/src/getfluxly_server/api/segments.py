"""Segments (workspace key): create, list, read (with the live ``count``), change, delete,
list members, and count an unsaved rule's members (``preview``).

A rule is the JSON of engine spec section 3 (see ``domain/segments/rules.py``); a fault is
400 ``validation_error`` whose ``field`` is its JSON path (``rule.all[1].value``). A live
name taken is 409 ``segment_name_taken``. Members are computed in the background when a
segment is made or its rule changes, then kept current as events arrive and time passes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import PageCursor, PageLimit, Request, Response, Timestamp
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.domain import paging
from getfluxly_server.domain.clock import SYSTEM
from getfluxly_server.domain.segments import store as segment_store
from getfluxly_server.storage.models import NAME_MAX, Segment

router = APIRouter(prefix="/v1", tags=["segments"])

NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "segment_name_taken: a live segment has the name"}
}

EXAMPLE_RULE = {
    "all": [
        {"trait": "plan", "op": "eq", "value": "pro"},
        {"event": "login", "count": {"gte": 3}, "within": "P7D"},
    ]
}

#: A rule as JSON: checked by the domain, which names the JSON path of a fault.
RuleJson = Annotated[Any, Field(description="A segment rule (engine spec section 3)")]


class NewSegment(Request):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    rule: RuleJson


class SegmentChanges(Request):
    """Only the fields given change; a changed rule recomputes the members."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    rule: RuleJson = None


class PreviewRequest(Request):
    rule: RuleJson


class SegmentView(Response):
    id: str
    project_id: str
    name: str
    rule: Any
    #: Grows with every change of the rule.
    version: int
    #: Members now.
    count: int
    created_at: Timestamp
    updated_at: Timestamp


class OneSegment(Response):
    segment: SegmentView


class SegmentList(Response):
    segments: list[SegmentView]
    #: Pass as ``?cursor=`` for the next page; null on the last page.
    next_cursor: str | None


class MemberView(Response):
    profile_id: str
    #: When the profile (last) entered the segment.
    entered_at: Timestamp


class MemberList(Response):
    members: list[MemberView]
    next_cursor: str | None


class Count(Response):
    count: int


class Deleted(Response):
    deleted: bool
    id: str


def _view(row: Segment, count: int) -> SegmentView:
    return SegmentView(
        id=row.id, project_id=row.project_id, name=row.name, rule=row.rule,
        version=row.version, count=count, created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


@router.post(
    "/projects/{project_id}/segments",
    status_code=201,
    responses=NAME_TAKEN,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"example": {"name": "active pros", "rule": EXAMPLE_RULE}}
            }
        }
    },
)
def create_segment(project_id: str, body: NewSegment, who: WorkspaceKey, db: DB) -> OneSegment:
    """Check the rule and save; members are computed in the background (``count`` starts
    at 0)."""
    with db.transaction() as session:
        row = segment_store.create(session, who, project_id, name=body.name, rule=body.rule)
        return OneSegment(segment=_view(row, 0))


@router.get("/projects/{project_id}/segments")
def list_segments(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> SegmentList:
    """The project's segments, newest first (deleted ones are left out), with counts."""
    with db.read() as session:
        found = segment_store.page(session, who, project_id, limit=limit, cursor=cursor)
        return SegmentList(
            segments=[_view(s, found.counts[s.id]) for s in found.segments],
            next_cursor=found.next_cursor,
        )


@router.post("/projects/{project_id}/segments/preview")
def preview_segment(project_id: str, body: PreviewRequest, who: WorkspaceKey, db: DB) -> Count:
    """How many of the project's profiles the rule matches now; nothing is saved."""
    with db.read() as session:
        return Count(count=segment_store.preview(session, who, project_id, body.rule, SYSTEM.now()))


@router.get("/segments/{segment_id}")
def get_segment(segment_id: str, who: WorkspaceKey, db: DB) -> OneSegment:
    with db.read() as session:
        row = segment_store.find(session, who, segment_id)
        return OneSegment(segment=_view(row, segment_store.count(session, row)))


@router.get("/segments/{segment_id}/members")
def list_members(
    segment_id: str,
    who: WorkspaceKey,
    db: DB,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> MemberList:
    """The members now, by profile id."""
    with db.read() as session:
        found = segment_store.members(session, who, segment_id, limit=limit, cursor=cursor)
        return MemberList(
            members=[
                MemberView(profile_id=m.profile_id, entered_at=m.entered_at) for m in found.members
            ],
            next_cursor=found.next_cursor,
        )


@router.patch("/segments/{segment_id}", responses=NAME_TAKEN)
def update_segment(segment_id: str, body: SegmentChanges, who: WorkspaceKey, db: DB) -> OneSegment:
    """Change the name and/or the rule (checked as on create)."""
    with db.transaction() as session:
        row = segment_store.update(session, who, segment_id, body.model_dump(exclude_unset=True))
        return OneSegment(segment=_view(row, segment_store.count(session, row)))


@router.delete("/segments/{segment_id}")
def delete_segment(segment_id: str, who: WorkspaceKey, db: DB) -> Deleted:
    """Gone from reads and lists, its name free, its members forgotten."""
    with db.transaction() as session:
        segment_store.delete(session, who, segment_id)
        return Deleted(deleted=True, id=segment_id)
