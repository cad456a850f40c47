"""Outbound webhooks in the database: customers' endpoints (secrets only ever encrypted),
the deliveries queued for them and the log of every attempt."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import (
    Job,
    JobStatus,
    MessageEvent,
    OutboundAttempt,
    OutboundDelivery,
    OutboundWebhook,
    Project,
    now,
)
from getfluxly_server.storage.paging import newest_first

#: A delivery's statuses.
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def add(session: Session, webhook: OutboundWebhook) -> OutboundWebhook:
    session.add(webhook)
    session.flush()
    return webhook


def get_in_workspace(
    session: Session, workspace_id: str, webhook_id: str, *, lock: bool = False
) -> OutboundWebhook | None:
    """The endpoint if its project belongs to ``workspace_id``; ``lock``: its row locked
    until the transaction ends, and read afresh."""
    query = (
        select(OutboundWebhook)
        .join(Project, Project.id == OutboundWebhook.project_id)
        .where(OutboundWebhook.id == webhook_id, Project.workspace_id == workspace_id)
    )
    if lock:
        query = query.with_for_update(of=OutboundWebhook).execution_options(populate_existing=True)
    return session.scalars(query).first()


def list_for_project(session: Session, project_id: str) -> Sequence[OutboundWebhook]:
    query = select(OutboundWebhook).where(OutboundWebhook.project_id == project_id)
    return session.scalars(query.order_by(OutboundWebhook.created_at, OutboundWebhook.id)).all()


def subscribed(session: Session, project_id: str) -> Sequence[tuple[str, list[str]]]:
    """``(id, events)`` of every endpoint of the project (fan-out reads this once a batch)."""
    query = select(OutboundWebhook.id, OutboundWebhook.events).where(
        OutboundWebhook.project_id == project_id
    )
    return [(row.id, list(row.events)) for row in session.execute(query)]


def delete(session: Session, webhook: OutboundWebhook) -> None:
    session.delete(webhook)


def every(session: Session) -> Sequence[OutboundWebhook]:
    """Every endpoint of every workspace (key rotation)."""
    return session.scalars(select(OutboundWebhook).order_by(OutboundWebhook.created_at)).all()


def add_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert deliveries (``id``, ``webhook_id``, ``project_id``, ``message_event_id``,
    ``event_type``) in one set-based statement."""
    if rows:
        moment = now()
        session.execute(
            insert(OutboundDelivery),
            [
                {**row, "status": PENDING, "attempts": 0, "created_at": moment,
                 "updated_at": moment}
                for row in rows
            ],
        )  # fmt: skip


def delivery(
    session: Session, delivery_id: str
) -> tuple[OutboundDelivery, OutboundWebhook, MessageEvent] | None:
    """A delivery with its endpoint and its event (None when any of them is gone)."""
    query = (
        select(OutboundDelivery, OutboundWebhook, MessageEvent)
        .join(OutboundWebhook, OutboundWebhook.id == OutboundDelivery.webhook_id)
        .join(MessageEvent, MessageEvent.id == OutboundDelivery.message_event_id)
        .where(OutboundDelivery.id == delivery_id)
    )
    row = session.execute(query).first()
    return None if row is None else (row[0], row[1], row[2])


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    attempt: int,
    status: str,
    status_code: int | None,
    error: str | None,
    excerpt: str | None,
    duration_ms: int,
    at: datetime,
) -> None:
    """Log one attempt and move the delivery to ``status``."""
    session.add(
        OutboundAttempt(
            delivery_id=delivery_id, attempt=attempt, status_code=status_code, error=error,
            response_excerpt=excerpt, duration_ms=duration_ms, at=at,
        )
    )  # fmt: skip
    session.execute(
        update(OutboundDelivery)
        .where(OutboundDelivery.id == delivery_id)
        .values(status=status, attempts=attempt, updated_at=at)
    )


def deliveries_page(
    session: Session,
    webhook_id: str,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
    status: str | None = None,
) -> Sequence[OutboundDelivery]:
    """Up to ``limit`` deliveries of the endpoint, newest first, older than ``before``
    (``(created_at, id)`` of the last one shown)."""
    query = select(OutboundDelivery).where(OutboundDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(OutboundDelivery.status == status)
    order = (OutboundDelivery.created_at, OutboundDelivery.id)
    return session.scalars(newest_first(query, *order, limit=limit, before=before)).all()


def attempts_of(
    session: Session, delivery_ids: Collection[str]
) -> dict[str, list[OutboundAttempt]]:
    """The attempts of these deliveries, in order, by delivery id (one query)."""
    found: dict[str, list[OutboundAttempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        query = (
            select(OutboundAttempt)
            .where(OutboundAttempt.delivery_id.in_(list(delivery_ids)))
            .order_by(OutboundAttempt.id)
        )
        for attempt in session.scalars(query):
            found[attempt.delivery_id].append(attempt)
    return found


def delete_finished(session: Session, before: datetime, batch: int = 10_000) -> int:
    """Delete up to ``batch`` deliveries that ended (succeeded or failed) before ``before``,
    with their attempts; how many. Callers loop, a transaction per call."""
    oldest = (
        select(OutboundDelivery.id)
        .where(
            OutboundDelivery.status.in_((SUCCEEDED, FAILED)), OutboundDelivery.updated_at < before
        )
        .order_by(OutboundDelivery.updated_at)
        .limit(batch)
    )
    ids = list(session.scalars(oldest))
    if ids:
        session.execute(sql_delete(OutboundAttempt).where(OutboundAttempt.delivery_id.in_(ids)))
        session.execute(sql_delete(OutboundDelivery).where(OutboundDelivery.id.in_(ids)))
    return len(ids)


def orphaned(
    session: Session, job_kind: str, changed_before: datetime, limit: int
) -> Sequence[OutboundDelivery]:
    """Up to ``limit`` pending deliveries last changed before ``changed_before`` that no
    queued or running job of ``job_kind`` will send (its job ended without finishing the
    delivery: attempts used up by crashes, or a failure outside the HTTP attempt), oldest
    first, read afresh. Two queries: the candidates, then which of them have a live job."""
    candidates = session.scalars(
        select(OutboundDelivery)
        .where(OutboundDelivery.status == PENDING, OutboundDelivery.updated_at < changed_before)
        .order_by(OutboundDelivery.updated_at, OutboundDelivery.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    ).all()
    if not candidates:
        return []
    of_delivery = Job.payload["delivery_id"].as_string()
    live = set(
        session.scalars(
            select(of_delivery).where(
                Job.kind == job_kind,
                Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                of_delivery.in_([d.id for d in candidates]),
            )
        )
    )
    return [d for d in candidates if d.id not in live]
