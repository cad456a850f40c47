"""Deliveries whose job ended without them: found and settled, never left ``pending``.

A delivery's job records every HTTP attempt itself (domain/outbound/sender.py), so in the
usual course a delivery ends ``succeeded`` or ``failed``. Its job can still end first: a
worker killed in the middle of attempts, again and again, spends the job's attempts (each
claim counts one) without any being recorded; a database that refused the attempt's record
leaves the job to fail on its own. Such a delivery would stay ``pending`` for ever, shown
as waiting in the log and sent by nobody.

:func:`recover` (run by every worker's sweeper, domain/outbound/retention.py) finds them: a
pending delivery unchanged for :data:`GRACE` with no queued or running job. Each gets one
attempt in its log, ``worker_lost`` (the last attempt's outcome is unknown: it may have
reached the endpoint, so receivers de-duplicate on ``webhook-id`` as ever), and is either
queued again with a new job or, when that was its last attempt, ``failed`` with that reason.
Safe in several workers at once: the rows are re-read and changed under the delivery's own
status check, so a delivery is settled once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from getfluxly_server.domain.outbound.sender import DELIVER, MAX_ATTEMPTS, Deliver
from getfluxly_server.storage import outbound_webhooks as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import OutboundAttempt, OutboundDelivery, now

log = logging.getLogger("getfluxly.webhooks.outbound")

#: How long a pending delivery without a job is left alone before it is recovered (a
#: margin: a delivery's job is queued in the transaction that makes it, and re-queued in the
#: one that records its attempt's end, so there is no window in which a live one has none).
GRACE = timedelta(minutes=5)
#: Deliveries settled per transaction.
BATCH = 500
LOST = (
    "worker_lost: the delivery's job ended without an outcome (its worker stopped, or the "
    "attempt could not be recorded)"
)


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover` did: deliveries queued again, and failed for good."""

    requeued: int
    failed: int


def recover(
    db: Database,
    *,
    grace: timedelta = GRACE,
    clock: Callable[[], datetime] = now,
    batch: int = BATCH,
) -> Recovered:
    """Settle every orphaned delivery (see the module docstring), a transaction per
    ``batch``."""
    requeued = failed = 0
    while True:
        moment = clock()
        with db.transaction() as session:
            found = store.orphaned(session, DELIVER.name, moment - grace, batch)
            for delivery in found:
                attempt = delivery.attempts + 1
                last = attempt >= MAX_ATTEMPTS
                status = store.FAILED if last else store.PENDING
                changed = session.execute(
                    update(OutboundDelivery)
                    .where(
                        OutboundDelivery.id == delivery.id,
                        OutboundDelivery.status == store.PENDING,
                        OutboundDelivery.attempts == delivery.attempts,
                    )
                    .values(status=status, attempts=attempt, updated_at=moment)
                )
                if not changed.rowcount:  # type: ignore[attr-defined]
                    continue  # another sweeper, or its job, got there first
                error = f"{LOST}; {'no attempts left' if last else 'sent again'}"
                session.add(OutboundAttempt(delivery_id=delivery.id, attempt=attempt,
                                            error=error, at=moment))  # fmt: skip
                if last:
                    failed += 1
                else:
                    DELIVER.enqueue(session, Deliver(delivery_id=delivery.id))
                    requeued += 1
        if len(found) < batch:
            break
    if requeued or failed:
        log.warning(
            "webhook deliveries left without a job: %d queued again, %d failed", requeued, failed
        )
    return Recovered(requeued=requeued, failed=failed)
