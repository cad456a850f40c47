"""Messages: the transactional send (server key) and the ledger (workspace key).

``POST /v1/messages`` records the message and answers 202 at once (a delivery worker sends
it); ``Idempotency-Key`` makes a retried call answer the same message. The ledger lists a
project's messages newest first, a page at a time: ``limit`` (1-500, default 50) and the
``next_cursor`` of the previous page as ``cursor``; ``next_cursor`` is null on the last page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from fastapi import Request as HTTPRequest
from pydantic import (
    Field,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from getfluxly_server.api.auth import ServerKey, WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import ActionBody, JSONObject, Request, Response, Timestamp
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.domain import messages
from getfluxly_server.storage.group_commit import GroupCommit
from getfluxly_server.storage.models import Message, MessageHistory, MessageStatus

router = APIRouter(prefix="/v1", tags=["messages"])

#: Longest id accepted in a body (ids are ``prefix_`` and 20 characters; external ids 255).
ID_MAX = 255
MAX_TAGS = 50
TAG_MAX = 255

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX)]
Tag = Annotated[str, StringConstraints(max_length=TAG_MAX)]


class ProfileRecipient(Request):
    """A profile of the project, by its GetFluxly id: its ``email`` trait is the address."""

    profile_id: Id


class ExternalRecipient(Request):
    """A profile of the project, by your user id (``external_id``)."""

    external_id: Id


def _recipient(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One clear error for a ``to`` of no accepted shape (pydantic would list one per shape)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((name, given),) = value.items()
        kinds: dict[str, type[Request]] = {
            "profile_id": ProfileRecipient,
            "external_id": ExternalRecipient,
        }
        kind = kinds.get(name)
        if kind is not None and isinstance(given, str) and 0 < len(given) <= ID_MAX:
            return kind(**{name: given})
    raise PydanticCustomError(
        "recipient",
        'must be an address ("ada@example.com"), {"profile_id": "prf_..."} or '
        '{"external_id": "your-user-id"} (ids of 1-255 characters)',
    )


Recipient = Annotated[str | ProfileRecipient | ExternalRecipient, WrapValidator(_recipient)]

EXAMPLE = {
    "to": "ada@example.com",
    "subject": "Your code is {{ data.code }}",
    "text": "Hello {{ profile.first_name | default: 'there' }}, your code is {{ data.code }}.",
    "data": {"code": "492 118"},
    "tags": {"kind": "login-code"},
}


class SendMessage(Request):
    """A transactional message: to an address or a profile; a template of the project
    (``template_id``) or inline Liquid (``subject`` and ``html`` and/or ``text``)."""

    to: Recipient
    template_id: Id | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    #: What the template sees as ``data``.
    data: JSONObject = Field(default_factory=dict)
    #: One of the project's providers; default: the project's default provider.
    provider_id: Id | None = None
    #: Labels kept with the message (and passed to providers as metadata where they take it).
    tags: dict[Tag, Tag] = Field(default_factory=dict, max_length=MAX_TAGS)
    #: Transactional mail carries no unsubscribe link (default true on this API).
    transactional: bool = True
    #: Track opens and clicks (the open pixel, links through the click redirect).
    tracking: bool = True
    #: Marketing mail only: one of the project's subscription groups (a recipient who left
    #: the group is not sent it).
    subscription_group: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class HistoryEntry(Response):
    status: str
    at: Timestamp
    detail: str | None


class MessageView(Response):
    id: str
    project_id: str
    status: MessageStatus
    #: The recipient's address ("erased" once its profile was erased).
    to: str
    #: Inline messages: the subject as given (Liquid); template messages: None until sent.
    subject: str | None
    provider_id: str | None
    provider_message_id: str | None
    #: The Message-ID header the message was sent with.
    smtp_message_id: str | None
    attempts: int
    #: The relay's (or provider API's) last answer.
    last_reply: str | None
    origin: str
    automation_id: str | None
    step_id: str | None
    broadcast_id: str | None
    profile_id: str | None
    template_id: str | None
    template_version: int | None
    tags: dict[str, Any]
    transactional: bool
    tracking: bool
    subscription_group: str | None
    created_at: Timestamp
    updated_at: Timestamp
    sent_at: Timestamp | None
    erased_at: Timestamp | None


class MessageDetailView(MessageView):
    #: Every status the message took, oldest first.
    history: list[HistoryEntry]


class OneMessage(Response):
    message: MessageDetailView


class MessagePage(Response):
    #: Newest first.
    messages: list[MessageView]
    #: Pass as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None


def _fields(row: Message) -> dict[str, Any]:
    return {
        "id": row.id, "project_id": row.project_id, "status": row.status, "to": row.to_email,
        "subject": row.subject, "provider_id": row.provider_id,
        "provider_message_id": row.provider_message_id, "smtp_message_id": row.smtp_message_id,
        "attempts": row.attempts, "last_reply": row.last_reply, "origin": row.origin,
        "automation_id": row.automation_id, "step_id": row.step_id,
        "broadcast_id": row.broadcast_id, "profile_id": row.profile_id,
        "template_id": row.template_id, "template_version": row.template_version,
        "tags": row.tags, "transactional": row.transactional, "tracking": row.tracking,
        "subscription_group": row.subscription_group, "created_at": row.created_at,
        "updated_at": row.updated_at, "sent_at": row.sent_at, "erased_at": row.erased_at,
    }  # fmt: skip


def _detail(row: Message, history: Sequence[MessageHistory]) -> OneMessage:
    entries = [HistoryEntry(status=h.status, at=h.at, detail=h.detail) for h in history]
    return OneMessage(message=MessageDetailView(**_fields(row), history=entries))


def _new_message(body: SendMessage) -> messages.NewMessage:
    to = body.to
    if isinstance(to, ProfileRecipient):
        recipient = messages.Recipient(profile_id=to.profile_id)
    elif isinstance(to, ExternalRecipient):
        recipient = messages.Recipient(external_id=to.external_id)
    else:
        recipient = messages.Recipient(email=to)
    return messages.NewMessage(
        recipient=recipient,
        content=messages.Content(
            template_id=body.template_id, subject=body.subject, html=body.html, text=body.text
        ),
        source=messages.Source(
            origin="api",
            provider_id=body.provider_id,
            transactional=body.transactional,
            tags=body.tags,
            tracking=body.tracking,
            subscription_group=body.subscription_group,
        ),
        data=body.data,
    )


def _fingerprint(body: SendMessage) -> str:
    """The request's meaning, not its bytes: the same fields in another order (or spaced
    differently) are the same request."""
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


_SEND_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "no_provider: the project has no email provider; profile_erased: the "
        "recipient profile was (or is being) erased",
    },
}


@router.post(
    "/messages",
    status_code=202,
    responses=_SEND_ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
async def send_message(
    body: SendMessage,
    who: ServerKey,
    request: HTTPRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retries with the same key within 24 hours answer the same message",
        ),
    ] = None,
) -> OneMessage:
    """Record a transactional message for sending: 202 with the message, ``queued`` (or
    ``suppressed``: the address is on the suppression list; it is never attempted)."""
    assert who.project_id is not None
    send = messages.SendRequest(
        who.project_id, _new_message(body), idempotency_key, _fingerprint(body)
    )
    # Recorded by the message writer, with the sends of concurrent requests in one commit.
    writer: GroupCommit[messages.SendRequest, messages.Recorded] = request.app.state.message_writer
    done = await writer.run(send)
    return _detail(done.message, done.history)


@router.get("/projects/{project_id}/messages")
def list_messages(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    status: Annotated[str | None, Query(description="one status, e.g. failed")] = None,
    to: Annotated[str | None, Query(description="the recipient's address")] = None,
    automation_id: str | None = None,
    broadcast_id: str | None = None,
    profile_id: str | None = None,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=messages.MAX_LIMIT)] = messages.DEFAULT_LIMIT,
) -> MessagePage:
    """The project's messages, newest first, a page at a time."""
    filters = messages.Filters(
        status=status, to_email=to, automation_id=automation_id, broadcast_id=broadcast_id,
        profile_id=profile_id,
    )  # fmt: skip
    with db.read() as session:
        found = messages.page(session, who, project_id, filters, cursor=cursor, limit=limit)
        return MessagePage(
            messages=[MessageView(**_fields(row)) for row in found.messages],
            next_cursor=found.next_cursor,
        )


@router.get("/messages/{message_id}")
def get_message(message_id: str, who: WorkspaceKey, db: DB) -> OneMessage:
    """One message with its history."""
    with db.read() as session:
        found = messages.detail(session, who, message_id)
        return _detail(found.message, found.history)


@router.post(
    "/messages/{message_id}/retry",
    responses={
        409: {
            "model": ErrorBody,
            "description": "not_retryable: only failed or unknown messages can be retried",
        }
    },
)
def retry_message(
    message_id: str,
    who: WorkspaceKey,
    db: DB,
    body: ActionBody,
) -> OneMessage:
    """Re-queue a ``failed`` or ``unknown`` message (it is sent again: for ``unknown``, the
    relay may already have taken it once). A ``note`` is kept in the history entry, after
    "retried by hand"."""
    with db.transaction() as session:
        found = messages.retry(session, who, message_id, note=body.note)
        return _detail(found.message, found.history)
