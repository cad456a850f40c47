"""Messages caught by the dev-mode SMTP catcher, each kept for one workspace."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import DevMessage, Workspace, now


def add(
    session: Session,
    mail_from: str,
    rcpt_tos: list[str],
    subject: str,
    raw: bytes,
    workspace_id: str | None = None,
    getfluxly_message_id: str | None = None,
) -> DevMessage:
    row = DevMessage(
        workspace_id=workspace_id, mail_from=mail_from, rcpt_tos=rcpt_tos, subject=subject,
        raw=raw, received_at=now(), getfluxly_message_id=getfluxly_message_id,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def newest(
    session: Session, workspace_id: str, limit: int, *, message_id: str | None = None
) -> Sequence[DevMessage]:
    """The workspace's caught messages (those of ledger message ``message_id`` only, if
    given), newest first."""
    query = select(DevMessage).where(DevMessage.workspace_id == workspace_id)
    if message_id is not None:
        query = query.where(DevMessage.getfluxly_message_id == message_id)
    return session.scalars(query.order_by(DevMessage.id.desc()).limit(limit)).all()


def workspace_exists(session: Session, workspace_id: str) -> bool:
    return session.get(Workspace, workspace_id) is not None
