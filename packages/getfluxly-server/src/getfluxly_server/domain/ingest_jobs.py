"""Job handlers for events: stitch identities in order; carry out erasures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from getfluxly_server.domain.identity import (
    ERASE_PROFILES,
    EraseProfiles,
    EventConsumer,
    erase,
    lock_for_processing,
    process_pending,
    process_project,
)
from getfluxly_server.domain.ingest import PROCESS_EVENTS, ProcessEvents
from getfluxly_server.queue.kinds import JobHandler
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Erasure


def handlers(db: Database, consumers: Sequence[EventConsumer] = ()) -> list[JobHandler[Any]]:
    """The event handlers, bound to this process's database; ``consumers`` are told of each
    chunk of stitched events (``identity.EventConsumer``)."""

    def process(payload: ProcessEvents) -> dict[str, Any]:
        return {"processed": process_project(db, payload.project_id, consumers)}

    def run_erasure(payload: EraseProfiles) -> dict[str, Any]:
        with db.read() as session:
            erasure = session.get(Erasure, payload.erasure_id)
            project_id = erasure.project_id if erasure is not None else None
        if project_id is None:
            return {"erased": False}
        # Events stored but not yet stitched may belong to the person: stitch them first, in
        # the same locked transaction as the erasure, so none can slip in between.
        with db.transaction() as session:
            lock_for_processing(session, project_id)
            process_pending(session, project_id, consumers)
            erase(session, payload.erasure_id)
        db.checkpoint()
        return {"erased": True}

    return [PROCESS_EVENTS.handler(process), ERASE_PROFILES.handler(run_erasure)]
