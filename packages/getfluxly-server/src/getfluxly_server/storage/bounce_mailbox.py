"""The bounce mailbox's reads: the ledger messages a report is about, across projects (a
report names a message, never a project; the message says whose it is)."""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Message


class Sent(NamedTuple):
    """What the join needs of a message."""

    id: str
    project_id: str
    to_email: str
    smtp_message_id: str | None


def by_ids(session: Session, ids: Collection[str]) -> dict[str, Sent]:
    """The messages with these ledger ids, by id."""
    if not ids:
        return {}
    query = select(Message.id, Message.project_id, Message.to_email, Message.smtp_message_id)
    rows = session.execute(query.where(Message.id.in_(list(ids))))
    return {row.id: Sent(*row) for row in rows}


def by_smtp_ids(session: Session, smtp_ids: Collection[str]) -> dict[str, list[Sent]]:
    """The messages with these Message-ID headers (as stored: without angle brackets), by
    header value; more than one per value only if two messages shared one."""
    if not smtp_ids:
        return {}
    query = select(Message.id, Message.project_id, Message.to_email, Message.smtp_message_id)
    found: dict[str, list[Sent]] = {}
    for row in session.execute(query.where(Message.smtp_message_id.in_(list(smtp_ids)))):
        found.setdefault(str(row.smtp_message_id), []).append(Sent(*row))
    return found
