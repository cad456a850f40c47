"""Outbound webhook deliveries never stay ``pending`` for ever, on SQLite and PostgreSQL.

Contract: a failure in making the request (a bug in building or signing it) is an attempt
that failed, logged with an ``internal_error``, retried, and the last one fails the delivery;
a delivery whose job ended without it (its workers killed until the job's attempts ran out)
is found by ``recovery.recover`` (every worker's sweeper runs it): one ``worker_lost``
attempt is logged and the delivery is queued again (and then sent), or, when that was its
last attempt, ``failed`` with that reason. A delivery whose job is still queued or running
is left alone. Run in this process against a real local endpoint.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flux_testkit.gfserver import GFDatabase, new_encryption_key
from flux_testkit.httpfake import Reply
from flux_testkit.outbound import Receiver, verify_signature
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.domain.outbound import endpoints, recovery, retention, sender, signing
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.queue.retry import Permanent, Retry
from getfluxly_server.settings import Settings
from getfluxly_server.storage import jobs
from getfluxly_server.storage import tenancy as tenancy_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Job,
    JobStatus,
    MessageEventType,
    OutboundAttempt,
    OutboundDelivery,
)

NOW = timedelta(0)


def _setup(db: Database, database: GFDatabase, url: str) -> tuple[Settings, str, str]:
    """A project with one endpoint at ``url`` and one recorded bounce: (settings, the
    endpoint's secret, the delivery's id)."""
    keyring = Keyring.parse(new_encryption_key())
    settings = Settings(
        database_url=database.sqlalchemy_url, keyring=keyring,
        webhook_backoff_base_seconds=0.01, webhook_backoff_cap_seconds=0.01,
    )  # fmt: skip
    with db.transaction() as session:
        project = tenancy_store.add_project(session, database.workspace.id, "Recovery")
        owner = Principal(key_id="key", kind="workspace", workspace_id=database.workspace.id,
                          project_id=None)  # fmt: skip
        made = endpoints.create(session, owner, project.id, url, ["message.bounced"], keyring)
        bounce = FeedbackEvent(
            type=MessageEventType.BOUNCED, email="ada@example.com", source="smtp",
            occurred_at=datetime.now(UTC), bounce_type="hard",
        )  # fmt: skip
        record(session, project.id, [bounce])
    with db.read() as session:
        [delivery] = session.scalars(
            select(OutboundDelivery).where(OutboundDelivery.project_id == project.id)
        ).all()
    return settings, made.secret, delivery.id


def _run(db: Database, settings: Settings, delivery_id: str) -> Any:
    [handler] = sender.handlers(db, settings, rng=random.Random(3))
    return handler({"delivery_id": delivery_id})


def _delivery(db: Database, delivery_id: str) -> tuple[str, int, list[str | None]]:
    """(status, attempts, each logged attempt's error)."""
    with db.read() as session:
        delivery = session.get(OutboundDelivery, delivery_id)
        assert delivery is not None
        errors = session.scalars(
            select(OutboundAttempt.error)
            .where(OutboundAttempt.delivery_id == delivery_id)
            .order_by(OutboundAttempt.id)
        ).all()
        return delivery.status, delivery.attempts, list(errors)


def _live_jobs(db: Database, delivery_id: str) -> list[Job]:
    with db.read() as session:
        return [
            job
            for job in session.scalars(select(Job).where(Job.kind == sender.DELIVER.name))
            if job.payload == {"delivery_id": delivery_id}
            and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        ]


def _kill_workers_until_the_job_gives_up(db: Database, delivery_id: str) -> None:
    """The delivery's job claimed by workers that die before recording anything (each
    claim counts an attempt; the lease lapses at once), until the queue fails it: what a
    worker killed mid-attempt, time after time, leaves."""
    [job] = _live_jobs(db, delivery_id)
    for _ in range(job.max_attempts):
        with db.transaction() as session:
            [claimed] = jobs.claim(session, "doomed", {sender.DELIVER.name: 1}, NOW)
    assert claimed.attempts >= claimed.max_attempts
    with db.transaction() as session:  # as the queue ends a job with no attempts left
        assert jobs.finish(session, claimed.id, "doomed", error="the worker was killed")
    assert _live_jobs(db, delivery_id) == []


def test_a_failure_in_making_the_request_is_an_attempt_and_the_last_fails_it(
    gf_db: Database, gf_database: GFDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> dict[str, str]:
        raise RuntimeError("a bug in signing")

    with Receiver() as endpoint:
        settings, _secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        monkeypatch.setattr(signing, "headers", broken)
        for _ in range(1, sender.MAX_ATTEMPTS):
            with pytest.raises(Retry):
                _run(gf_db, settings, delivery_id)
        with pytest.raises(Permanent):
            _run(gf_db, settings, delivery_id)
        status, attempts, errors = _delivery(gf_db, delivery_id)
        assert (status, attempts) == ("failed", sender.MAX_ATTEMPTS)
        assert len(errors) == sender.MAX_ATTEMPTS
        assert all((e or "").startswith("internal_error: the request could not be made (Runtime")
                   for e in errors)  # fmt: skip
        assert "a bug in signing" not in str(errors)  # our own line, not the exception's text
        assert endpoint.requests == []


def test_a_delivery_whose_job_ended_without_it_is_sent_again(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    with Receiver() as endpoint:
        settings, secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        # While its job is queued (and while it runs), the delivery is left alone.
        assert recovery.recover(gf_db, grace=NOW) == recovery.Recovered(0, 0)
        _kill_workers_until_the_job_gives_up(gf_db, delivery_id)
        assert _delivery(gf_db, delivery_id)[:2] == ("pending", 0)
        # Not before the grace period has passed.
        assert recovery.recover(gf_db) == recovery.Recovered(0, 0)

        assert recovery.recover(gf_db, grace=NOW) == recovery.Recovered(requeued=1, failed=0)
        status, attempts, errors = _delivery(gf_db, delivery_id)
        assert (status, attempts) == ("pending", 1)
        assert (errors[0] or "").startswith("worker_lost:")
        [job] = _live_jobs(gf_db, delivery_id)
        assert job.status == JobStatus.QUEUED
        assert recovery.recover(gf_db, grace=NOW) == recovery.Recovered(0, 0)  # once

        assert _run(gf_db, settings, delivery_id)["sent"] is True
        assert _delivery(gf_db, delivery_id)[:2] == ("succeeded", 2)
        [request] = endpoint.requests
        verify_signature(secret, request)
        assert request.headers["webhook-id"] == delivery_id


def test_a_lost_last_attempt_fails_the_delivery_with_the_reason(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    with Receiver(*[Reply(500)] * (sender.MAX_ATTEMPTS - 1)) as endpoint:
        settings, _secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        for _ in range(sender.MAX_ATTEMPTS - 1):
            with pytest.raises(Retry):
                _run(gf_db, settings, delivery_id)
        assert _delivery(gf_db, delivery_id)[:2] == ("pending", sender.MAX_ATTEMPTS - 1)
        _kill_workers_until_the_job_gives_up(gf_db, delivery_id)

        # The sweeper every worker runs settles it.
        sweeper = retention.Sweeper(gf_db, timedelta(days=30), recover_grace=NOW)
        sweeper.start()
        try:
            deadline = time.monotonic() + 30
            while _delivery(gf_db, delivery_id)[0] == "pending":
                assert time.monotonic() < deadline, "the sweeper did not settle it"
                time.sleep(0.05)
        finally:
            sweeper.stop()
        status, attempts, errors = _delivery(gf_db, delivery_id)
        assert (status, attempts) == ("failed", sender.MAX_ATTEMPTS)
        assert (errors[-1] or "").startswith("worker_lost:")
        assert "no attempts left" in (errors[-1] or "")
        assert _live_jobs(gf_db, delivery_id) == []
        assert _run(gf_db, settings, delivery_id) == {"sent": False, "reason": "failed"}
        assert len(endpoint.requests) == sender.MAX_ATTEMPTS - 1
