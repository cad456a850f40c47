"""The suppression list of a project (workspace key): list, add, remove.

Adding an address already on the list is idempotent: 200 with the entry as it was (its first
reason kept); a new entry is 201. Addresses are kept lower-cased, and found in any case.
Removing answers 204, or 404 when the address is not on the list.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Response as HTTPResponse
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import PageCursor, PageLimit, Request, Response, Timestamp
from getfluxly_server.domain import paging
from getfluxly_server.domain import suppressions as domain
from getfluxly_server.storage.models import ADDRESS_MAX, Suppression, SuppressionReason

router = APIRouter(prefix="/v1/projects/{project_id}/suppressions", tags=["suppressions"])

#: hard_bounce, complaint, soft_bounce_limit, unsubscribed, manual.
Reason = SuppressionReason


class NewSuppression(Request):
    email: str = Field(min_length=1, max_length=ADDRESS_MAX)
    reason: Reason = SuppressionReason.MANUAL


class SuppressionView(Response):
    project_id: str
    email: str
    reason: Reason
    #: The message whose bounce, complaint or unsubscribe put the address here, if any.
    message_id: str | None
    created_at: Timestamp


class OneSuppression(Response):
    suppression: SuppressionView


class SuppressionList(Response):
    suppressions: list[SuppressionView]
    #: Pass as ``?cursor=`` for the next page; null on the last page.
    next_cursor: str | None


def _view(row: Suppression) -> SuppressionView:
    return SuppressionView(
        project_id=row.project_id, email=row.email, reason=SuppressionReason(row.reason),
        message_id=row.message_id, created_at=row.created_at,
    )  # fmt: skip


@router.get("")
def list_suppressions(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    reason: Annotated[Reason | None, Query()] = None,
    email: Annotated[
        str | None, Query(max_length=ADDRESS_MAX, description="part of the address, any case")
    ] = None,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> SuppressionList:
    """The list in address order, optionally only one reason or addresses containing
    ``email``."""
    with db.read() as session:
        found = domain.page(
            session,
            who,
            project_id,
            limit=limit,
            cursor=cursor,
            reason=reason.value if reason else None,
            email=email,
        )
        return SuppressionList(
            suppressions=[_view(s) for s in found.suppressions], next_cursor=found.next_cursor
        )


@router.post(
    "",
    status_code=201,
    responses={200: {"model": OneSuppression, "description": "Already on the list: as it was"}},
)
def add_suppression(
    project_id: str, body: NewSuppression, who: WorkspaceKey, db: DB, answer: HTTPResponse
) -> OneSuppression:
    """Add an address (reason ``manual`` unless given); mail to it is never attempted."""
    with db.transaction() as session:
        done = domain.add(session, who, project_id, body.email, body.reason.value)
        if not done.added:
            answer.status_code = 200
        return OneSuppression(suppression=_view(done.entry))


@router.delete("/{email:path}", status_code=204, response_class=HTTPResponse)
def remove_suppression(project_id: str, email: str, who: WorkspaceKey, db: DB) -> HTTPResponse:
    """Take the address off the list (any case); mail to it may go out again."""
    with db.transaction() as session:
        domain.remove(session, who, project_id, email)
    return HTTPResponse(status_code=204)
