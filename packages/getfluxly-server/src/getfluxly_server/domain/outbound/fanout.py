"""Fan-out: the rows ``domain.feedback.record`` wrote become deliveries to the project's
subscribed endpoints, in the caller's transaction (so an event rolled back is never sent,
and one committed is always queued)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.outbound.events import event_type
from getfluxly_server.domain.outbound.sender import DELIVER, Deliver
from getfluxly_server.storage import outbound_webhooks as store
from getfluxly_server.storage.models import MessageEvent, new_id


def queue_deliveries(session: Session, project_id: str, rows: Sequence[MessageEvent]) -> int:
    """Queue a delivery (and the job that sends it) for every endpoint of ``project_id``
    subscribed to each row's type; how many. Set-based: one read of the endpoints, one
    insert of the deliveries, one of the jobs, whatever the batch's size. ``rows`` must have
    their ids (flushed); rows of another project are ignored."""
    if not rows:
        return 0
    endpoints = store.subscribed(session, project_id)
    if not endpoints:
        return 0
    deliveries: list[dict[str, Any]] = []
    ids: list[str] = []
    for row in rows:
        if row.project_id != project_id:
            continue
        kind = event_type(row)
        for webhook_id, events in endpoints:
            if kind in events:
                ids.append(new_id("whmsg"))
                deliveries.append(
                    {"id": ids[-1], "webhook_id": webhook_id, "project_id": project_id,
                     "message_event_id": row.id, "event_type": kind}
                )  # fmt: skip
    store.add_deliveries(session, deliveries)
    return DELIVER.enqueue_many(session, (Deliver(delivery_id=d) for d in ids))
