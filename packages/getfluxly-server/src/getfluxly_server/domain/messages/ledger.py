"""Reading the ledger (a project's messages, newest first, a page at a time; one message with
its history) and retrying a message by hand. Workspace keys; another tenant's message is
``not_found``, exactly like a message that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.domain.messages.errors import NotRetryable
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import messages as store
from getfluxly_server.storage.models import Message, MessageHistory, MessageStatus, now

#: Statuses a message can be retried from.
RETRYABLE = (MessageStatus.FAILED.value, MessageStatus.UNKNOWN.value)
DEFAULT_LIMIT = paging.DEFAULT_LIMIT
MAX_LIMIT = paging.MAX_LIMIT

Filters = store.Filters


@dataclass(frozen=True)
class Page:
    """Messages, newest first, and the cursor of the next page (None: this was the last)."""

    messages: Sequence[Message]
    next_cursor: str | None


@dataclass(frozen=True)
class MessageDetail:
    message: Message
    history: Sequence[MessageHistory]


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    filters: Filters,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page:
    """One page of the project's messages matching ``filters`` (``to_email`` compared as the
    ledger stores addresses), newest first; cursors as every list's (``domain.paging``)."""
    project_of(session, principal, project_id)
    if filters.status is not None and filters.status not in set(MessageStatus):
        raise ValidationFailed(
            f"status must be one of {', '.join(s.value for s in MessageStatus)}", field="status"
        )
    if filters.to_email is not None:
        filters = Filters(
            status=filters.status,
            to_email=canonical_address(filters.to_email, field="to"),
            automation_id=filters.automation_id,
            broadcast_id=filters.broadcast_id,
            profile_id=filters.profile_id,
        )
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.page(session, project_id, filters, before, n), limit, cursor
    )
    return Page(rows, next_cursor)


def _find(session: Session, principal: Principal, message_id: str) -> Message:
    found = store.in_workspace(session, principal.workspace_id, message_id)
    if found is None or principal.project_id not in (None, found.project_id):
        raise NotFound("message")
    return found


def detail(session: Session, principal: Principal, message_id: str) -> MessageDetail:
    """The message and its history, oldest entry first."""
    message = _find(session, principal, message_id)
    return MessageDetail(message, store.history(session, message.id))


def history(session: Session, message: Message) -> Sequence[MessageHistory]:
    """A message's history, oldest entry first (the caller has found the message)."""
    return store.history(session, message.id)


def retry(
    session: Session, principal: Principal, message_id: str, *, note: str | None = None
) -> MessageDetail:
    """Put a ``failed`` or ``unknown`` message back in the queue, due now (history:
    "retried by hand", then ``note`` if given); ``not_retryable`` for any other status, or
    an erased message."""
    message = _find(session, principal, message_id)
    detail_ = "retried by hand" + (f": {note}" if note else "")
    if not store.requeue(session, message.id, RETRYABLE, now(), detail=detail_):
        current = store.get(session, message.id)
        assert current is not None
        raise NotRetryable(current.status, erased=current.erased_at is not None)
    return detail(session, principal, message_id)
