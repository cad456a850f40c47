"""Messages caught by the dev-mode SMTP catcher."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import DevMessage, now


def add(
    session: Session, mail_from: str, rcpt_tos: list[str], subject: str, raw: bytes
) -> DevMessage:
    row = DevMessage(
        mail_from=mail_from, rcpt_tos=rcpt_tos, subject=subject, raw=raw, received_at=now()
    )
    session.add(row)
    session.flush()
    return row


def newest(session: Session, limit: int) -> Sequence[DevMessage]:
    query = select(DevMessage).order_by(DevMessage.id.desc()).limit(limit)
    return session.scalars(query).all()
