"""Keeping the delivery log bounded: deliveries that ended (succeeded, or failed for good)
more than ``GETFLUXLY_WEBHOOK_LOG_RETENTION_DAYS`` ago are deleted with their attempts, by a
sweeper every worker process runs (the deletes are idempotent: two sweepers at once only
share the work). Pending deliveries are never deleted; the same sweeper settles those whose
job ended without them (domain/outbound/recovery.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from getfluxly_server.domain.outbound import recovery
from getfluxly_server.queue.periodic import Periodic
from getfluxly_server.storage import outbound_webhooks as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import now

log = logging.getLogger("getfluxly.webhooks.outbound")

#: Deliveries deleted per transaction (SQLite's write lock is never held for long).
BATCH = 5_000


def sweep(db: Database, before: datetime, batch: int = BATCH) -> int:
    """Delete every delivery that ended before ``before``, a transaction per ``batch``;
    how many."""
    deleted = 0
    while True:
        with db.transaction() as session:
            count = store.delete_finished(session, before, batch)
        deleted += count
        if count < batch:
            return deleted


class Sweeper(Periodic):
    """A worker's runner: :func:`sweep` and :func:`recovery.recover` at start and every
    ``interval`` seconds after."""

    name = "webhook-log-sweep"

    def __init__(
        self,
        db: Database,
        retention: timedelta,
        interval: float = 3600.0,
        recover_grace: timedelta = recovery.GRACE,
    ) -> None:
        super().__init__(interval)
        self.db = db
        self.retention = retention
        self.recover_grace = recover_grace

    def run_once(self) -> None:
        """Sweep, then recover; a failure of one is logged and does not stop the other."""
        try:
            deleted = sweep(self.db, now() - self.retention)
            if deleted:
                log.info("deleted %d webhook deliveries older than %s", deleted, self.retention)
        except Exception:  # a broken database must not stop recovery: log, try later
            log.exception("could not sweep the webhook delivery log")
        try:
            recovery.recover(self.db, grace=self.recover_grace)
        except Exception:
            log.exception("could not recover webhook deliveries left without a job")
