"""The message log (filter by status, recipient; a page at a time), one message with its
history, and retrying a failed one (``domain.messages``: the ledger API's services)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import Response

from getfluxly_server.domain import messages
from getfluxly_server.domain.errors import NotFound
from getfluxly_server.storage.models import MessageStatus
from getfluxly_server.web.routing import Ctx, page


@page("/projects/{project_id}/messages")
def log(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    status = ctx.query.get("status", "").strip() or None
    to = ctx.query.get("to", "").strip() or None
    cursor = ctx.query.get("cursor") or None
    filters = messages.Filters(status=status, to_email=to)
    with ctx.db.read() as session:
        found = messages.page(session, ctx.user.principal, project_id, filters, cursor=cursor)
        next_url = None
        if found.next_cursor:
            kept = {k: v for k, v in (("status", status), ("to", to)) if v}
            next_url = "?" + urlencode({**kept, "cursor": found.next_cursor})
        return ctx.render(
            "messages.html",
            messages=found.messages,
            statuses=[s.value for s in MessageStatus],
            status=status or "",
            to=to or "",
            next_url=next_url,
        )


@page("/projects/{project_id}/messages/{message_id}")
def message(ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        found = messages.detail(session, ctx.user.principal, ctx.params["message_id"])
        if found.message.project_id != ctx.params["project_id"]:
            raise NotFound("message")
        return ctx.render(
            "message.html",
            message=found.message,
            history=found.history,
            tags=json.dumps(found.message.tags, sort_keys=True),
            retryable=found.message.status in messages.ledger.RETRYABLE
            and found.message.erased_at is None,
        )


@page("/projects/{project_id}/messages/{message_id}/retry", method="POST", need="edit")
def retry(ctx: Ctx) -> Response:
    project_id, message_id = ctx.params["project_id"], ctx.params["message_id"]
    with ctx.db.transaction() as session:
        found = messages.detail(session, ctx.user.principal, message_id)
        if found.message.project_id != project_id:
            raise NotFound("message")
        messages.retry(session, ctx.user.principal, message_id, note=f"by {ctx.user.email}")
    return ctx.redirect(f"/projects/{project_id}/messages/{message_id}", flash="Queued again")
