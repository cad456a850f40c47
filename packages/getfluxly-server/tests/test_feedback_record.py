"""``domain.feedback.record``: the one way feedback is recorded, on SQLite and PostgreSQL.

Contract (COMMON contract 1, engine spec sections 6 and 7): each event is joined to its
message by GetFluxly's id, the relay's message id or the Message-ID header (of the project
only); a ``message_events`` row is written per event, a replayed ``(project, source,
provider_event_id)`` skipped; the message's status moves forward only, with history; hard
bounces, complaints, unsubscribes and repeated soft bounces suppress the address; a group
unsubscribe is a ``subscriptions`` row; profile events ``email_*`` land on the message's
profile through the normal stitching (machine opens get none). Set-based.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from flux_testkit import ledger
from flux_testkit.gfserver import GFDatabase
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import identity
from getfluxly_server.domain.feedback.record import FeedbackEvent, FeedbackRules, record
from getfluxly_server.domain.feedback.statuses import CATCH_UP, CatchUp, catch_up
from getfluxly_server.storage import messages as message_store
from getfluxly_server.storage import outbox
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Event,
    Job,
    Message,
    MessageEvent,
    MessageEventType,
    Subscription,
    Suppression,
    WebhookInbox,
)

T = MessageEventType
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _sent(
    db: Database, project_id: str, emails: Sequence[str], profile_id: str | None = None
) -> list[str]:
    """Messages as the delivery workers leave them once the relay took them: ``sent``, with
    the relay's id (``pm-<n>``) and the Message-ID (``<n>@mail.test``)."""
    ids = ledger.queue_messages(db, project_id, _provider(db, project_id), emails,
                                profile_id=profile_id)  # fmt: skip
    with db.transaction() as session:
        for message_id in ids:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="sent", provider_message_id=f"pm-{message_id}",
                        smtp_message_id=f"{message_id}@mail.test", due_at=None)
            )  # fmt: skip
    return ids


_PROVIDERS: dict[str, str] = {}


def _provider(db: Database, project_id: str) -> str:
    """The project's provider (one is needed to record a message; nothing is sent here)."""
    if project_id not in _PROVIDERS:
        keyring = Keyring.parse(Keyring.generate())
        _PROVIDERS[project_id] = ledger.add_provider(
            db, keyring, project_id, ledger.smtp_body("127.0.0.1", 25)
        )
    return _PROVIDERS[project_id]


def _event(kind: MessageEventType, email: str, **fields: Any) -> FeedbackEvent:
    return FeedbackEvent(
        type=kind, email=email, source=fields.pop("source", "postmark"),
        occurred_at=fields.pop("occurred_at", T0), **fields,
    )  # fmt: skip


def _record(
    db: Database, project_id: str, events: Sequence[FeedbackEvent], **kw: Any
) -> list[MessageEvent]:
    with db.transaction() as session:
        rows = record(session, project_id, events, **kw)
        session.expunge_all()
        return rows


def _status(db: Database, message_id: str) -> tuple[str, list[str]]:
    with db.read() as session:
        message = session.get(Message, message_id)
        assert message is not None
        return message.status, [h.status for h in message_store.history(session, message_id)]


def _suppressions(db: Database, project_id: str) -> dict[str, str]:
    with db.read() as session:
        rows = session.scalars(select(Suppression).where(Suppression.project_id == project_id))
        return {row.email: row.reason for row in rows}


@pytest.fixture
def project(gf_db: Database, gf_database: GFDatabase) -> str:
    return ledger.make_project(gf_db, gf_database.workspace.id)


def test_events_join_by_id_provider_id_or_message_id_within_the_project(
    gf_db: Database, gf_database: GFDatabase, project: str
) -> None:
    by_id, by_provider, by_header = _sent(gf_db, project, ["a@x.test", "b@x.test", "c@x.test"])
    other_project = ledger.make_project(gf_db, gf_database.workspace.id, "Other")
    (foreign,) = _sent(gf_db, other_project, ["d@x.test"])
    rows = _record(
        gf_db,
        project,
        [
            _event(T.DELIVERED, "a@x.test", message_id=by_id),
            _event(T.DELIVERED, "B@X.test", provider_message_id=f"pm-{by_provider}"),
            # As a relay quotes it: in angle brackets.
            _event(T.DELIVERED, "c@x.test", smtp_message_id=f"<{by_header}@mail.test>"),
            # Another project's message is never joined to, whatever the id says.
            _event(T.DELIVERED, "d@x.test", message_id=foreign),
            _event(T.DELIVERED, "e@x.test", provider_message_id="nobody-sent-this"),
        ],
    )
    assert [(r.message_id, r.email) for r in rows] == [
        (by_id, "a@x.test"), (by_provider, "b@x.test"), (by_header, "c@x.test"),
        (None, "d@x.test"), (None, "e@x.test"),
    ]  # fmt: skip
    assert all(r.project_id == project and r.type == "delivered" for r in rows)
    for message_id in (by_id, by_provider, by_header):
        assert _status(gf_db, message_id) == ("delivered", ["queued", "delivered"])
    assert _status(gf_db, foreign)[0] == "sent"


def test_a_replayed_report_is_recorded_once(gf_db: Database, project: str) -> None:
    (message_id,) = _sent(gf_db, project, ["a@x.test"])
    bounce = _event(T.BOUNCED, "a@x.test", message_id=message_id, bounce_type="soft",
                    provider_event_id="ev-1")  # fmt: skip
    first = _record(gf_db, project, [bounce, bounce])  # twice in one batch: once
    assert len(first) == 1
    assert _record(gf_db, project, [bounce]) == []
    # The same id from another reporter is another report.
    from_ses = _event(T.BOUNCED, "a@x.test", source="ses", provider_event_id="ev-1")
    assert len(_record(gf_db, project, [from_ses])) == 1
    with gf_db.read() as session:
        assert len(session.scalars(select(MessageEvent)).all()) == 2
    assert _status(gf_db, message_id) == ("bounced", ["queued", "bounced"])


def test_statuses_only_move_forward_with_a_history_step_each(gf_db: Database, project: str) -> None:
    first, second, waiting = _sent(gf_db, project, ["a@x.test", "b@x.test", "c@x.test"])
    with gf_db.transaction() as session:  # still in the queue: feedback leaves it to its worker
        session.execute(update(Message).where(Message.id == waiting).values(status="queued"))
    _record(
        gf_db,
        project,
        [
            _event(T.OPENED, "a@x.test", message_id=first, occurred_at=T0 + timedelta(minutes=2)),
            _event(T.DELIVERED, "a@x.test", message_id=first, occurred_at=T0),
            _event(T.DEFERRED, "b@x.test", message_id=second, reason="421 try later"),
            _event(T.DELIVERED, "c@x.test", message_id=waiting),
        ],
    )
    assert _status(gf_db, first) == ("opened", ["queued", "delivered", "opened"])
    assert _status(gf_db, second) == ("sent", ["queued"])  # a relay's deferral moves nothing
    assert _status(gf_db, waiting) == ("queued", ["queued"])

    _record(gf_db, project, [_event(T.BOUNCED, "a@x.test", message_id=first, bounce_type="hard",
                                    reason="550 5.1.1 no such user")])  # fmt: skip
    # Late reports of lesser steps: recorded, the status stays.
    late = _record(gf_db, project, [_event(T.DELIVERED, "a@x.test", message_id=first),
                                    _event(T.CLICKED, "a@x.test", message_id=first)])  # fmt: skip
    assert len(late) == 2
    assert _status(gf_db, first) == ("bounced", ["queued", "delivered", "opened", "bounced"])
    with gf_db.read() as session:
        last = message_store.history(session, first)[-1]
        assert last.detail == "postmark: hard bounce; 550 5.1.1 no such user"
    _record(gf_db, project, [_event(T.COMPLAINED, "a@x.test", message_id=first)])
    assert _status(gf_db, first)[0] == "complained"


def _catch_up_jobs(db: Database, project_id: str) -> list[Job]:
    with db.read() as session:
        found = session.scalars(select(Job).where(Job.kind == CATCH_UP.name).order_by(Job.id))
        jobs = [job for job in found if job.payload["project_id"] == project_id]
        session.expunge_all()
        return jobs


def _run_catch_up(db: Database, job: Job) -> dict[str, Any]:
    with db.transaction() as session:
        session.execute(delete(Job).where(Job.id == job.id))  # as the worker finishes it
        return catch_up(session, CATCH_UP.load(job.payload))


def test_feedback_that_outruns_the_worker_moves_the_status_once_it_is_recorded(
    gf_db: Database, project: str
) -> None:
    """The relay has the message, so its recipient can unsubscribe, before the worker has
    recorded the relay's reply: the unsubscribe applies at once, the status follows the
    worker's ``sent``."""
    message_id, other = _sent(gf_db, project, ["early@x.test", "slow@x.test"])
    with gf_db.transaction() as session:
        session.execute(
            update(Message).where(Message.id.in_([message_id, other]))
            .values(status="sending", locked_by="worker-1")
        )  # fmt: skip
    _record(gf_db, project, [_event(T.OPENED, "early@x.test", message_id=message_id),
                             _event(T.UNSUBSCRIBED, "early@x.test", message_id=message_id,
                                    occurred_at=T0 + timedelta(seconds=1)),
                             _event(T.DELIVERED, "slow@x.test", message_id=other)])  # fmt: skip
    assert _suppressions(gf_db, project) == {"early@x.test": "unsubscribed"}
    assert _status(gf_db, message_id) == ("sending", ["queued"])  # the worker's, still
    [job] = _catch_up_jobs(gf_db, project)
    assert CATCH_UP.load(job.payload).message_ids == tuple(sorted([message_id, other]))
    assert job.run_at > datetime.now(UTC)  # a second later: the worker records first

    with gf_db.transaction() as session:
        recorded = outbox.record_outcomes(
            session, "worker-1", [outbox.Verdict(message_id, "sent", detail="250 ok")],
            attempted=True,
        )  # fmt: skip
        assert recorded == [message_id]
    assert _run_catch_up(gf_db, job) == {"messages": 2, "in_flight": 1}
    assert _status(gf_db, message_id) == (
        "unsubscribed",
        ["queued", "sent", "opened", "unsubscribed"],
    )
    # The other is still with its worker: looked at again, later than the first time.
    [again] = _catch_up_jobs(gf_db, project)
    payload = CATCH_UP.load(again.payload)
    assert (payload.message_ids, payload.look) == ((other,), 1)
    assert again.run_at - job.run_at > timedelta(seconds=0.5)

    with gf_db.transaction() as session:
        outbox.record_outcomes(session, "worker-1", [outbox.Verdict(other, "sent")], attempted=True)
    assert _run_catch_up(gf_db, again) == {"messages": 1, "in_flight": 0}
    assert _status(gf_db, other) == ("delivered", ["queued", "sent", "delivered"])
    assert _catch_up_jobs(gf_db, project) == []
    # Replaying again changes nothing (the statuses only go forward).
    with gf_db.transaction() as session:
        catch_up(session, CatchUp(project_id=project, message_ids=(message_id, other)))
    assert _status(gf_db, message_id)[1] == ["queued", "sent", "opened", "unsubscribed"]


def test_bounces_complaints_and_unsubscribes_suppress(gf_db: Database, project: str) -> None:
    ids = _sent(gf_db, project, ["hard@x.test", "spam@x.test", "leave@x.test", "group@x.test"])
    _record(
        gf_db,
        project,
        [
            _event(T.BOUNCED, "Hard@X.test", message_id=ids[0], bounce_type="hard"),
            _event(T.COMPLAINED, "spam@x.test", message_id=ids[1]),
            _event(T.UNSUBSCRIBED, "leave@x.test", message_id=ids[2], source="tracking"),
            _event(
                T.UNSUBSCRIBED,
                "group@x.test",
                message_id=ids[3],
                source="tracking",
                group="newsletter",
            ),
            _event(T.BOUNCED, "soft@x.test", bounce_type="soft"),
            _event(T.BOUNCED, "not an address", bounce_type="hard"),
        ],
    )
    assert _suppressions(gf_db, project) == {
        "hard@x.test": "hard_bounce", "spam@x.test": "complaint", "leave@x.test": "unsubscribed",
    }  # fmt: skip
    with gf_db.read() as session:
        choices = session.scalars(select(Subscription)).all()
        assert [(c.email, c.group_name, c.subscribed, c.message_id) for c in choices] == [
            ("group@x.test", "newsletter", False, ids[3])
        ]
        entry = session.get(Suppression, (project, "hard@x.test"))
        assert entry is not None
        assert entry.message_id == ids[0]


def test_soft_bounces_of_enough_messages_within_the_window_suppress(
    gf_db: Database, project: str
) -> None:
    ids = _sent(gf_db, project, ["full@x.test"] * 4)
    now = datetime.now(UTC)
    rules = FeedbackRules(soft_bounce_limit=3, soft_bounce_window=timedelta(days=7))

    def soft(message_id: str, days_ago: float, event_id: str) -> FeedbackEvent:
        when = now - timedelta(days=days_ago)
        return _event(T.BOUNCED, "full@x.test", message_id=message_id, bounce_type="soft",
                      occurred_at=when, provider_event_id=event_id)  # fmt: skip

    # Long ago, and twice for one message: neither counts twice.
    _record(gf_db, project, [soft(ids[0], 30, "old"), soft(ids[1], 1, "a"), soft(ids[1], 1, "b")],
            rules=rules)  # fmt: skip
    assert _suppressions(gf_db, project) == {}
    _record(gf_db, project, [soft(ids[2], 0.5, "c")], rules=rules)
    assert _suppressions(gf_db, project) == {}
    _record(gf_db, project, [soft(ids[3], 0, "d")], rules=rules)
    assert _suppressions(gf_db, project) == {"full@x.test": "soft_bounce_limit"}


def test_profile_events_land_on_the_profile_through_stitching(
    gf_db: Database, project: str
) -> None:
    profile = ledger.add_profile(gf_db, project, {"email": "ada@x.test"})
    (message_id,) = _sent(gf_db, project, ["ada@x.test"], profile_id=profile)
    _record(
        gf_db,
        project,
        [
            _event(T.DELIVERED, "ada@x.test", message_id=message_id),
            _event(T.OPENED, "ada@x.test", message_id=message_id, machine=True, source="tracking"),
            _event(
                T.OPENED,
                "ada@x.test",
                message_id=message_id,
                source="tracking",
                occurred_at=T0 + timedelta(minutes=1),
            ),
            _event(
                T.CLICKED,
                "ada@x.test",
                message_id=message_id,
                source="tracking",
                url="https://example.com/a",
                occurred_at=T0 + timedelta(minutes=2),
            ),
            _event(T.DEFERRED, "ada@x.test", message_id=message_id),
        ],
    )
    seen: list[tuple[str, str | None]] = []

    def consumer(session: Session, project_id: str, events: Sequence[Event]) -> None:
        seen.extend((e.name or "", e.profile_id) for e in events)

    assert identity.process_project(gf_db, project, [consumer]) == 3
    assert seen == [
        ("email_delivered", profile),
        ("email_opened", profile),
        ("email_clicked", profile),
    ]
    with gf_db.read() as session:
        events = session.scalars(select(Event).order_by(Event.id)).all()
        assert [e.timestamp for e in events] == [
            T0,
            T0 + timedelta(minutes=1),
            T0 + timedelta(minutes=2),
        ]
        assert events[2].properties == {
            "message_id": message_id,
            "source": "tracking",
            "url": "https://example.com/a",
        }
        rows = session.scalars(select(MessageEvent).order_by(MessageEvent.id)).all()
        assert {r.profile_id for r in rows} == {profile}
        assert [r.machine for r in rows if r.type == "opened"] == [True, False]


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, clauseelement: Any, *args: Any) -> None:
        seen.append(str(clauseelement)[:40])

    event.listen(db.engine, "before_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_execute", count)


def test_a_large_batch_takes_a_fixed_number_of_statements(gf_db: Database, project: str) -> None:
    profile = ledger.add_profile(gf_db, project, {"email": "many@x.test"})
    ids = _sent(gf_db, project, [f"r{i}@x.test" for i in range(600)], profile_id=profile)
    kinds = [T.DELIVERED, T.OPENED, T.BOUNCED, T.COMPLAINED, T.UNSUBSCRIBED, T.CLICKED]
    events = [
        _event(kinds[i % 6], f"r{i}@x.test", provider_message_id=f"pm-{message_id}",
               provider_event_id=f"e{i}", bounce_type="hard" if i % 6 == 2 else None,
               group="news" if i % 12 == 4 else None)
        for i, message_id in enumerate(ids)
    ]  # fmt: skip
    with _statements(gf_db) as seen:
        rows = _record(gf_db, project, events)
    assert len(rows) == 600
    assert len(seen) <= 20, sorted(set(seen))
    assert len(_suppressions(gf_db, project)) == 100 + 100 + 50


def test_an_erased_persons_feedback_is_scrubbed(gf_db: Database, project: str) -> None:
    profile = ledger.add_profile(gf_db, project, {"email": "ada@x.test"})
    (mine,) = _sent(gf_db, project, ["ada@x.test"], profile_id=profile)
    (other,) = _sent(gf_db, project, ["grace@x.test"])
    _record(
        gf_db,
        project,
        [
            _event(T.CLICKED, "ada@x.test", message_id=mine, url="https://example.com/private"),
            _event(T.UNSUBSCRIBED, "ada@x.test", message_id=mine, group="news"),
            # A report that named no message of hers, only her address.
            _event(T.BOUNCED, "Ada@X.test", bounce_type="soft", reason="mailbox full"),
            _event(T.CLICKED, "grace@x.test", message_id=other, url="https://example.com/g"),
        ],
    )
    with gf_db.transaction() as session:
        stored = {"project_id": project, "relay": "smtp", "content_type": "application/json",
                  "received_at": datetime.now(UTC)}  # fmt: skip
        session.add(WebhookInbox(delivery_id="a", payload='{"email": "ADA@x.test"}', **stored))
        session.add(WebhookInbox(delivery_id="g", payload='{"email": "grace@x.test"}', **stored))
    with gf_db.transaction() as session:
        erasure = identity.request_erasure(session, project, profile, {"reason": "gdpr_dsr"})
    with gf_db.transaction() as session:
        identity.erase(session, erasure.erasure.id)

    with gf_db.read() as session:
        rows = session.scalars(select(MessageEvent).order_by(MessageEvent.id)).all()
        assert [(r.email, r.url, r.reason) for r in rows] == [
            ("erased", None, None), ("erased", None, None), ("erased", None, None),
            ("grace@x.test", "https://example.com/g", None),
        ]  # fmt: skip
        assert [r.type for r in rows] == ["clicked", "unsubscribed", "bounced", "clicked"]
        assert session.scalars(select(Subscription)).all() == []
        assert [p.delivery_id for p in session.scalars(select(WebhookInbox))] == ["g"]
