"""Dev mode: what the built-in SMTP catcher received (workspace key; 404 outside dev mode)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, settings
from getfluxly_server.api.models import Response, Timestamp
from getfluxly_server.domain import dev_messages
from getfluxly_server.settings import Settings
from getfluxly_server.storage.models import DevMessage

router = APIRouter(prefix="/v1/dev", tags=["dev mode"])


class CaughtMessage(Response):
    id: int
    received_at: Timestamp
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    #: The ledger message this is (``GET /v1/messages/{id}``), from its
    #: ``X-GetFluxly-Message-Id`` header; null for mail that is not a ledger message.
    getfluxly_message_id: str | None
    #: The message source as received (undecodable bytes replaced).
    raw: str


class CaughtMessages(Response):
    messages: list[CaughtMessage]


def _view(row: DevMessage) -> CaughtMessage:
    return CaughtMessage(
        id=row.id, received_at=row.received_at, mail_from=row.mail_from, rcpt_tos=row.rcpt_tos,
        subject=row.subject, getfluxly_message_id=row.getfluxly_message_id,
        raw=row.raw.decode("utf-8", errors="replace"),
    )  # fmt: skip


@router.get("/messages")
def list_messages(
    who: WorkspaceKey,
    db: DB,
    config: Annotated[Settings, Depends(settings)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    message_id: Annotated[
        str | None, Query(description="only what was caught for this ledger message (msg_...)")
    ] = None,
) -> CaughtMessages:
    """The caller's workspace's caught mail, newest first, each with its envelope, raw
    source and the ledger message it is."""
    with db.read() as session:
        rows = dev_messages.caught(session, who, limit, dev=config.dev, message_id=message_id)
        return CaughtMessages(messages=[_view(row) for row in rows])
