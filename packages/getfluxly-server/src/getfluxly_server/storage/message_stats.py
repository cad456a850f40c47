"""Counts of a project's mail per UTC day, for the dashboard's charts: all SQL."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Message, MessageEvent


def _day(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a time column (SQLite keeps times as UTC text)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def sends_per_day(
    session: Session, project_id: str, since: datetime, automation_id: str | None = None
) -> dict[date, int]:
    """Messages handed to a provider (``sent_at``) per day since ``since`` (only those
    of ``automation_id`` when given)."""
    day = _day(session, Message.sent_at)
    query = select(day, func.count()).where(
        Message.project_id == project_id, Message.sent_at >= since
    )
    if automation_id is not None:
        query = query.where(Message.automation_id == automation_id)
    rows = session.execute(query.group_by(day)).all()
    return {_as_date(d): int(n) for d, n in rows}


def events_per_day(
    session: Session, project_id: str, since: datetime, automation_id: str | None = None
) -> dict[tuple[str, date], int]:
    """``message_events`` per (type, day) since ``since``; opens and clicks made by
    machines (privacy proxies, link scanners) left out. With ``automation_id``: only the
    events joined to that automation's messages."""
    day = _day(session, MessageEvent.occurred_at)
    query = select(MessageEvent.type, day, func.count()).where(
        MessageEvent.project_id == project_id,
        MessageEvent.occurred_at >= since,
        MessageEvent.machine.is_(False),
    )
    if automation_id is not None:
        query = query.join(Message, Message.id == MessageEvent.message_id).where(
            Message.automation_id == automation_id
        )
    rows = session.execute(query.group_by(MessageEvent.type, day)).all()
    return {(str(t), _as_date(d)): int(n) for t, d, n in rows}
