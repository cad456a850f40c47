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
) -> DevMessage:
    row = DevMessage(
        workspace_id=workspace_id, mail_from=mail_from, rcpt_tos=rcpt_tos, subject=subject,
        raw=raw, received_at=now(),
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def newest(session: Session, workspace_id: str, limit: int) -> Sequence[DevMessage]:
    """The workspace's caught messages, newest first."""
    query = (
        select(DevMessage)
        .where(DevMessage.workspace_id == workspace_id)
        .order_by(DevMessage.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()


def workspace_exists(session: Session, workspace_id: str) -> bool:
    return session.get(Workspace, workspace_id) is not None
