"""Segments told of traits an ``update_traits`` step wrote (``domain.segments.membership.
profiles_changed``), in a job of its own queued in the run's transaction.

Not in the run's transaction: re-evaluating takes the project's lock, and a runner holding
runs while it waits for that lock could deadlock with an ingest chunk, which holds the
project's lock and waits for those runs (exit_on, waits). The job runs once the step's
transaction committed, so segments see the traits it wrote.
"""

from __future__ import annotations

from typing import Any

from getfluxly_server.domain.clock import Clock
from getfluxly_server.domain.segments import membership
from getfluxly_server.queue.kinds import JobHandler, JobKind, JobPayload
from getfluxly_server.storage.db import Database


class TraitsChanged(JobPayload):
    project_id: str
    profile_ids: list[str]


TRAITS_CHANGED = JobKind("automations.traits_changed", TraitsChanged)


def handlers(db: Database, clock: Clock) -> list[JobHandler[Any]]:
    def changed(payload: TraitsChanged) -> dict[str, Any]:
        with db.transaction() as session:
            entered, left = membership.profiles_changed(
                session, payload.project_id, payload.profile_ids, clock.now()
            )
        return {"entered": entered, "left": left}

    return [TRAITS_CHANGED.handler(changed)]
