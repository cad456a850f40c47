"""Broadcasts (workspace key): a template sent to a segment's members, now or at ``send_at``,
at ``rate_per_minute``; started, paused, resumed and cancelled by actions.

Statuses: ``draft`` → (``start``) ``scheduled`` (send_at in the future) or ``sending`` →
``sent``; ``sending`` ⇄ ``paused`` (``pause``/``resume``); any not yet finished →
``cancelled``. An action the status does not allow is 409 ``invalid_transition`` (with
``status`` and ``action``). Unknown ``template_id``/``segment_id``/``provider_id``: 400
``validation_error`` naming the field. Every answer carries ``counts``; see
``domain/broadcasts/service.py`` for what each count means.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import (
    ActionBody,
    Moment,
    PageCursor,
    PageLimit,
    Request,
    Response,
    Timestamp,
)
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.domain import broadcasts, paging
from getfluxly_server.domain.broadcasts.service import MAX_RATE_PER_MINUTE
from getfluxly_server.storage.models import NAME_MAX, Broadcast, BroadcastStatus

log = logging.getLogger("getfluxly.broadcasts")
router = APIRouter(prefix="/v1", tags=["broadcasts"])

ID_MAX = 64
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX)]
Rate = Annotated[int, Field(ge=1, le=MAX_RATE_PER_MINUTE)]
#: Answers an action can give besides the common ones (api/openapi_docs.py).
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "invalid_transition: the broadcast's status does not allow this",
    }
}

EXAMPLE = {
    "name": "March newsletter",
    "template_id": "tpl_...",
    "segment_id": "seg_...",
    "send_at": "2026-03-01T09:00:00Z",
    "rate_per_minute": 6000,
}


class NewBroadcast(Request):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    template_id: Id
    segment_id: Id
    #: When to start (with a zone, e.g. ``Z``); absent or past: at ``start``.
    send_at: Moment | None = None
    #: Messages recorded per minute at most; absent: as fast as the provider allows.
    rate_per_minute: Rate | None = None
    #: One of the project's providers; absent: the project's default provider.
    provider_id: Id | None = None


class BroadcastChanges(Request):
    """Only the fields given change (a draft or scheduled broadcast)."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    template_id: Id | None = None
    segment_id: Id | None = None
    send_at: Moment | None = None
    rate_per_minute: Rate | None = None
    provider_id: Id | None = None


#: An action's ``note`` is kept in the server's log; a cancel also writes it in the history
#: of every message it withdraws.


class CountsView(Response):
    #: Members of the segment when the broadcast started.
    targeted: int
    #: Accepted by the relay (whatever feedback came after).
    sent: int
    #: Refused, failed for good, or unknown (the relay's answer was lost).
    failed: int
    #: On the project's suppression list: never attempted.
    suppressed: int
    #: Not finished yet: queued, sending, deferred, held by a pause, or not recorded yet.
    pending: int
    #: Members with no usable address (or erased, or the same person as another member).
    skipped: int
    #: Never sent because the broadcast was cancelled.
    cancelled: int


class BroadcastView(Response):
    id: str
    project_id: str
    name: str
    status: BroadcastStatus
    template_id: str
    segment_id: str
    provider_id: str | None
    send_at: Timestamp | None
    rate_per_minute: int | None
    counts: CountsView
    #: Why the server paused it by itself (its template deleted, ...); null otherwise.
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class OneBroadcast(Response):
    broadcast: BroadcastView


class BroadcastList(Response):
    #: Newest first.
    broadcasts: list[BroadcastView]
    #: Pass as ``?cursor=`` for the next page; null on the last page.
    next_cursor: str | None


def _view(row: Broadcast, counts: broadcasts.Counts) -> BroadcastView:
    return BroadcastView(
        id=row.id, project_id=row.project_id, name=row.name,
        status=BroadcastStatus(row.status), template_id=row.template_id,
        segment_id=row.segment_id, provider_id=row.provider_id, send_at=row.send_at,
        rate_per_minute=row.rate_per_minute, counts=CountsView(**vars(counts)),
        last_error=row.last_error, created_at=row.created_at, updated_at=row.updated_at,
        started_at=row.started_at, finished_at=row.finished_at,
    )  # fmt: skip


def _log(action: str, row: Broadcast, note: str | None) -> None:
    log.info(
        "broadcast %s: %s, now %s%s", row.id, action, row.status, f" ({note!r})" if note else ""
    )


def _one(session: Any, row: Broadcast) -> OneBroadcast:
    session.flush()
    return OneBroadcast(broadcast=_view(row, broadcasts.counts(session, [row])[row.id]))


@router.post(
    "/projects/{project_id}/broadcasts",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
def create_broadcast(
    project_id: str, body: NewBroadcast, who: WorkspaceKey, db: DB
) -> OneBroadcast:
    """A ``draft``: nothing is sent until ``POST /v1/broadcasts/{id}/start``."""
    with db.transaction() as session:
        row = broadcasts.create(session, who, project_id, **body.model_dump())
        return _one(session, row)


@router.get("/projects/{project_id}/broadcasts")
def list_broadcasts(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    status: Annotated[BroadcastStatus | None, Query()] = None,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> BroadcastList:
    """The project's broadcasts, newest first; ``status`` narrows the list."""
    with db.read() as session:
        found = broadcasts.page(
            session, who, project_id, status=status.value if status else None, cursor=cursor,
            limit=limit,
        )  # fmt: skip
        counts = broadcasts.counts(session, found.broadcasts)
        return BroadcastList(
            broadcasts=[_view(b, counts[b.id]) for b in found.broadcasts],
            next_cursor=found.next_cursor,
        )


@router.get("/broadcasts/{broadcast_id}")
def get_broadcast(broadcast_id: str, who: WorkspaceKey, db: DB) -> OneBroadcast:
    """The broadcast and its counts."""
    with db.read() as session:
        return _one(session, broadcasts.find(session, who, broadcast_id))


@router.patch("/broadcasts/{broadcast_id}", responses=CONFLICT)
def update_broadcast(
    broadcast_id: str, body: BroadcastChanges, who: WorkspaceKey, db: DB
) -> OneBroadcast:
    """Change a draft or scheduled broadcast (``null`` clears send_at, rate_per_minute,
    provider_id; a scheduled broadcast whose send_at is cleared starts at once)."""
    with db.transaction() as session:
        row = broadcasts.update(session, who, broadcast_id, body.model_dump(exclude_unset=True))
        return _one(session, row)


@router.post("/broadcasts/{broadcast_id}/start", responses=CONFLICT)
def start_broadcast(broadcast_id: str, who: WorkspaceKey, db: DB, body: ActionBody) -> OneBroadcast:
    """Start a draft: ``scheduled`` if its send_at is in the future, else ``sending`` now
    (the segment's members are its audience from this moment)."""
    with db.transaction() as session:
        row = broadcasts.start(session, who, broadcast_id)
        _log("start", row, body.note)
        return _one(session, row)


@router.post("/broadcasts/{broadcast_id}/pause", responses=CONFLICT)
def pause_broadcast(broadcast_id: str, who: WorkspaceKey, db: DB, body: ActionBody) -> OneBroadcast:
    """Stop sending: nothing more goes out until ``resume`` (a chunk being handed to the
    relay at this moment still does)."""
    with db.transaction() as session:
        row = broadcasts.pause(session, who, broadcast_id)
        _log("pause", row, body.note)
        return _one(session, row)


@router.post("/broadcasts/{broadcast_id}/resume", responses=CONFLICT)
def resume_broadcast(
    broadcast_id: str, who: WorkspaceKey, db: DB, body: ActionBody
) -> OneBroadcast:
    """Carry on where it stopped; nobody already sent to is sent to again."""
    with db.transaction() as session:
        row = broadcasts.resume(session, who, broadcast_id)
        _log("resume", row, body.note)
        return _one(session, row)


@router.post("/broadcasts/{broadcast_id}/cancel", responses=CONFLICT)
def cancel_broadcast(
    broadcast_id: str, who: WorkspaceKey, db: DB, body: ActionBody
) -> OneBroadcast:
    """End it for good: messages not yet handed to a relay are withdrawn."""
    with db.transaction() as session:
        row = broadcasts.cancel(session, who, broadcast_id, note=body.note)
        _log("cancel", row, body.note)
        return _one(session, row)
