"""Inbound webhooks in the database: each project's relay secrets (encrypted; rotated ones
kept until they expire) and the inbox of accepted posts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Project, WebhookInbox, WebhookSecret


def project_exists(session: Session, project_id: str) -> bool:
    return session.scalar(select(Project.id).where(Project.id == project_id)) is not None


def live_secrets(
    session: Session, project_id: str, relay: str | None, now: datetime
) -> Sequence[WebhookSecret]:
    """The project's secrets (of ``relay``, or of every relay) that have not expired, the
    newest first."""
    query = select(WebhookSecret).where(
        WebhookSecret.project_id == project_id,
        or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
    )
    if relay is not None:
        query = query.where(WebhookSecret.relay == relay)
    return session.scalars(
        query.order_by(WebhookSecret.relay, WebhookSecret.created_at.desc(), WebhookSecret.id)
    ).all()


def retire(session: Session, project_id: str, relay: str, at: datetime) -> None:
    """Give the relay's current secret(s) an end (``at``); those ending sooner keep theirs."""
    session.execute(
        update(WebhookSecret)
        .where(
            WebhookSecret.project_id == project_id,
            WebhookSecret.relay == relay,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > at),
        )
        .values(expires_at=at),
        execution_options={"synchronize_session": False},
    )


def add_secret(session: Session, row: WebhookSecret) -> None:
    session.add(row)
    session.flush()


def remove_secrets(session: Session, project_id: str, relay: str) -> int:
    """Delete every secret of the relay (current and retiring); how many."""
    result = session.execute(
        delete(WebhookSecret).where(
            WebhookSecret.project_id == project_id, WebhookSecret.relay == relay
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def every_secret(session: Session) -> Sequence[WebhookSecret]:
    """Every stored secret (for maintenance such as key rotation)."""
    return session.scalars(select(WebhookSecret).order_by(WebhookSecret.id)).all()


def store_post(
    session: Session,
    project_id: str,
    relay: str,
    delivery_id: str,
    content_type: str,
    payload: str,
    received_at: datetime,
) -> bool:
    """Put a post in the inbox unless its ``(project, relay, delivery_id)`` is there (a
    replay); whether it was new. One INSERT ... ON CONFLICT DO NOTHING, so two copies posted
    at once store one."""
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert_(WebhookInbox)
        .values(
            project_id=project_id,
            relay=relay,
            delivery_id=delivery_id,
            content_type=content_type,
            payload=payload,
            received_at=received_at,
            events=0,
        )
        .on_conflict_do_nothing(index_elements=["project_id", "relay", "delivery_id"])
        .returning(WebhookInbox.id)
    )
    return session.execute(statement).first() is not None


def take_pending(session: Session, project_id: str, limit: int) -> Sequence[WebhookInbox]:
    """Up to ``limit`` of the project's unprocessed posts, oldest first, locked for this
    transaction (PostgreSQL skips those another worker holds; SQLite's write lock already
    serialises)."""
    query = (
        select(WebhookInbox)
        .where(WebhookInbox.project_id == project_id, WebhookInbox.processed_at.is_(None))
        .order_by(WebhookInbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).all()


def pending_projects(session: Session) -> list[str]:
    """Projects with unprocessed posts (for a sweep after a crash)."""
    query = select(WebhookInbox.project_id).where(WebhookInbox.processed_at.is_(None))
    return sorted(set(session.scalars(query.distinct())))


def delete_processed(session: Session, before: datetime) -> int:
    """Delete processed posts received before ``before`` (their events are recorded)."""
    result = session.execute(
        delete(WebhookInbox).where(
            WebhookInbox.processed_at.is_not(None), WebhookInbox.received_at < before
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def erase(session: Session, project_id: str, addresses: Collection[str]) -> int:
    """Delete the project's stored posts that name any of ``addresses`` (any case): an
    erased person's raw reports. How many."""
    emails = sorted({a.strip().lower() for a in addresses if a.strip()})
    if not emails:
        return 0
    lowered = func.lower(WebhookInbox.payload)
    matches = [lowered.contains(email, autoescape=True) for email in emails]
    result = session.execute(
        delete(WebhookInbox).where(WebhookInbox.project_id == project_id, or_(*matches))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
