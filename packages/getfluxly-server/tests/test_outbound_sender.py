"""The outbound webhook sender's retry decisions, run in this process against a real local
endpoint, on SQLite and PostgreSQL: the wait after a failed attempt is random (jitter) and
never above ``base * 2**attempt`` nor the cap; a 429/503 ``Retry-After`` is honoured up to the
cap; the eighth failure ends the delivery for good; a deleted endpoint's job does nothing;
the log's sweep deletes what ended long ago and nothing pending.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flux_testkit.gfserver import GFDatabase, new_encryption_key
from flux_testkit.httpfake import Reply
from flux_testkit.outbound import Receiver, verify_signature
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.domain.outbound import endpoints, retention, sender
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.queue.retry import Permanent, Retry
from getfluxly_server.settings import Settings
from getfluxly_server.storage import tenancy as tenancy_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Job,
    MessageEventType,
    OutboundAttempt,
    OutboundDelivery,
)

BASE, CAP = 1.0, 30.0


def _setup(db: Database, database: GFDatabase, url: str) -> tuple[Settings, str, str]:
    """A project with one endpoint at ``url`` and one recorded bounce: (settings, the
    endpoint's secret, the delivery's id)."""
    keyring = Keyring.parse(new_encryption_key())
    settings = Settings(
        database_url=database.sqlalchemy_url, keyring=keyring,
        webhook_backoff_base_seconds=BASE, webhook_backoff_cap_seconds=CAP,
    )  # fmt: skip
    workspace_id = database.workspace.id
    with db.transaction() as session:
        project = tenancy_store.add_project(session, workspace_id, "Sender")
        owner = Principal(
            key_id="key", kind="workspace", workspace_id=workspace_id, project_id=None
        )
        made = endpoints.create(session, owner, project.id, url, ["message.bounced"], keyring)
        record(
            session,
            project.id,
            [
                FeedbackEvent(
                    type=MessageEventType.BOUNCED,
                    email="ada@example.com",
                    source="smtp",
                    occurred_at=datetime.now(UTC),
                    bounce_type="hard",
                )
            ],
        )
    with db.read() as session:
        [delivery] = session.scalars(select(OutboundDelivery)).all()
        [job] = session.scalars(select(Job).where(Job.kind == sender.DELIVER.name)).all()
        assert job.payload == {"delivery_id": delivery.id}
        assert job.max_attempts == sender.MAX_ATTEMPTS
    return settings, made.secret, delivery.id


def _run(db: Database, settings: Settings, delivery_id: str, seed: int = 7) -> Any:
    [handler] = sender.handlers(db, settings, rng=random.Random(seed))
    return handler({"delivery_id": delivery_id})


def test_waits_are_jittered_and_capped(gf_db: Database, gf_database: GFDatabase) -> None:
    with Receiver(*[Reply(500)] * 8) as endpoint:
        settings, secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        delays = []
        for attempt in range(1, sender.MAX_ATTEMPTS):
            with pytest.raises(Retry) as raised:
                _run(gf_db, settings, delivery_id, seed=attempt)
            assert raised.value.delay is not None
            delays.append(raised.value.delay)
            assert 0 <= raised.value.delay <= min(CAP, BASE * 2**attempt)
        assert len(set(delays)) == len(delays)  # random, not a fixed schedule
        # The eighth failure is the last: the delivery fails for good.
        with pytest.raises(Permanent):
            _run(gf_db, settings, delivery_id)
        assert _run(gf_db, settings, delivery_id) == {"sent": False, "reason": "failed"}
        assert len(endpoint.requests) == sender.MAX_ATTEMPTS
        for request in endpoint.requests:
            verify_signature(secret, request)


@pytest.mark.parametrize(("retry_after", "expected"), [("7", 7.0), ("86400", CAP)])
def test_retry_after_is_honoured_up_to_the_cap(
    gf_db: Database, gf_database: GFDatabase, retry_after: str, expected: float
) -> None:
    with Receiver(Reply(429, headers={"Retry-After": retry_after})) as endpoint:
        settings, _secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        with pytest.raises(Retry) as raised:
            _run(gf_db, settings, delivery_id)
        assert raised.value.delay is not None
        assert expected <= raised.value.delay <= CAP
        assert _run(gf_db, settings, delivery_id)["sent"] is True


def test_a_deleted_endpoint_leaves_nothing_to_send(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    with Receiver() as endpoint:
        settings, _secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        with gf_db.transaction() as session:
            delivery = session.get(OutboundDelivery, delivery_id)
            assert delivery is not None
            owner = Principal(
                key_id="key", kind="workspace", workspace_id=gf_database.workspace.id,
                project_id=None,
            )  # fmt: skip
            endpoints.remove(session, owner, delivery.webhook_id)
        assert _run(gf_db, settings, delivery_id) == {"sent": False, "reason": "gone"}
        assert endpoint.requests == []


def test_the_log_keeps_what_is_pending_and_what_is_recent(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    with Receiver() as endpoint:
        settings, _secret, delivery_id = _setup(gf_db, gf_database, endpoint.url)
        assert _run(gf_db, settings, delivery_id)["sent"] is True
    # A second delivery of the same event, still pending.
    with gf_db.transaction() as session:
        done = session.get(OutboundDelivery, delivery_id)
        assert done is not None
        session.add(
            OutboundDelivery(
                id="whmsg_pending0000000000000", webhook_id=done.webhook_id,
                project_id=done.project_id, message_event_id=done.message_event_id,
                event_type=done.event_type, status="pending",
            )
        )  # fmt: skip
    later = datetime.now(UTC) + timedelta(days=31)
    assert retention.sweep(gf_db, datetime.now(UTC) - timedelta(days=30)) == 0  # too recent
    assert retention.sweep(gf_db, later, batch=1) == 1  # the one that ended; pending stays
    with gf_db.read() as session:
        left = session.scalars(select(OutboundDelivery.id)).all()
        attempts = session.scalars(select(OutboundAttempt.id)).all()
    assert (left, attempts) == (["whmsg_pending0000000000000"], [])
