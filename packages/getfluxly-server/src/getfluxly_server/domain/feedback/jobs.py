"""The feedback job handlers: process a project's webhook inbox; catch statuses up with
feedback that outran the message's worker."""

from __future__ import annotations

from typing import Any

from getfluxly_server.domain.feedback.config import FeedbackConfig
from getfluxly_server.domain.feedback.inbox import PROCESS_INBOX, ProcessInbox, process
from getfluxly_server.domain.feedback.statuses import CATCH_UP, CatchUp, catch_up
from getfluxly_server.queue.kinds import JobHandler
from getfluxly_server.storage.db import Database


def handlers(db: Database, config: FeedbackConfig) -> list[JobHandler[Any]]:
    """The inbox and catch-up handlers, bound to this process's database and feedback
    settings."""

    def run(payload: ProcessInbox) -> dict[str, Any]:
        return process(db, payload.project_id, config.relays, rules=config.rules, sns=config.sns)

    def catch_up_job(payload: CatchUp) -> dict[str, Any]:
        with db.transaction() as session:
            return catch_up(session, payload)

    return [PROCESS_INBOX.handler(run), CATCH_UP.handler(catch_up_job)]
