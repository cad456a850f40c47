"""Delivery workers against real local relays, on SQLite and PostgreSQL.

Each test queues messages as the ledger does (``flux_testkit.ledger``), runs the dispatcher's
cycles in the test's thread (so every step is deterministic) against a real SMTP server on
loopback with scripted faults, or a local fake of an HTTP provider, and reads the ledger.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, update

from flux_testkit import ledger
from flux_testkit.provider_fakes import PostmarkFake
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import (
    MESSAGE_ID_FIELD,
    MESSAGE_ID_HEADER,
    BuildContext,
    DeliveryResult,
    Outcome,
)
from getfluxly_server.domain.delivery import (
    Dispatcher,
    LocalSendGate,
    ProviderLimits,
    RetryRules,
)
from getfluxly_server.domain.delivery.classify import verdict
from getfluxly_server.settings import Settings, SettingsError
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Message,
    MessageHistory,
    Profile,
    Suppression,
    now,
)
from getfluxly_server.storage.outbox import ClaimedMessage

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

FINAL = {"sent", "failed", "suppressed", "unknown"}
#: Retries come back within milliseconds here (the rules' shape is what is tested).
QUICK = RetryRules(max_age=timedelta(hours=72), base_seconds=0.001, cap_seconds=0.01)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(Keyring.generate())


@pytest.fixture
def project(gf_db: Database, gf_database: GFDatabase) -> str:
    return ledger.make_project(gf_db, gf_database.workspace.id)


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(pipelining=True, auth=True) as server:
        yield server


@pytest.fixture
def dispatcher(gf_db: Database, keyring: Keyring) -> Iterator[Dispatcher]:
    made = Dispatcher(
        gf_db, keyring=keyring, build_context=BuildContext(timeout=5.0), rules=QUICK,
        lease_seconds=30, rng=random.Random(7),
    )  # fmt: skip
    try:
        yield made
    finally:
        made.stop()


def messages(db: Database, ids: Sequence[str]) -> dict[str, Message]:
    with db.read() as session:
        rows = session.scalars(select(Message).where(Message.id.in_(ids)))
        return {row.id: row for row in rows}


def history(db: Database, message_id: str) -> list[tuple[str, str | None]]:
    with db.read() as session:
        rows = session.scalars(
            select(MessageHistory)
            .where(MessageHistory.message_id == message_id)
            .order_by(MessageHistory.id)
        )
        return [(row.status, row.detail) for row in rows]


def run_until_final(
    dispatcher: Dispatcher, db: Database, ids: Sequence[str], timeout: float = 20.0
) -> dict[str, Message]:
    """Cycles until every message is in a final status (deferred ones come back quickly)."""
    deadline = time.monotonic() + timeout
    while True:
        dispatcher.run_once()
        found = messages(db, ids)
        if all(m.status in FINAL for m in found.values()):
            return found
        if time.monotonic() > deadline:
            raise AssertionError({m.id: m.status for m in found.values()})
        time.sleep(0.02)


def smtp_provider(db: Database, keyring: Keyring, project: str, relay: SMTPTestServer) -> str:
    return ledger.add_provider(db, keyring, project, ledger.smtp_body(relay.host, relay.port))


def header_ids(relay: SMTPTestServer) -> list[str]:
    return [str(m.message[MESSAGE_ID_HEADER]) for m in relay.messages]


def test_a_batch_is_sent_with_the_ledger_id_in_a_header(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    provider = smtp_provider(gf_db, keyring, project, relay)
    ids = ledger.queue_messages(gf_db, project, provider, [f"u{i}@example.com" for i in range(5)])
    found = run_until_final(dispatcher, gf_db, ids)
    assert sorted(header_ids(relay)) == sorted(ids)
    for index, message_id in enumerate(ids):
        row = found[message_id]
        assert (row.status, row.attempts, row.locked_by, row.due_at) == ("sent", 1, None, None)
        assert row.sent_at is not None
        assert row.last_reply
        assert row.last_reply.startswith("250")
        assert row.smtp_message_id  # the Message-ID header FluxMail wrote
        assert [s for s, _ in history(gf_db, message_id)] == ["queued", "sent"]
        [received] = [m for m in relay.messages if m.message[MESSAGE_ID_HEADER] == message_id]
        assert received.rcpt_tos == [f"u{index}@example.com"]
        assert str(received.message["Subject"]) == f"Hello u{index}@example.com"
        assert f"this is message {index}." in received.message.get_content()
        assert f"<{row.smtp_message_id}>" == str(received.message["Message-ID"])


def test_a_greylisting_451_defers_then_the_message_is_sent(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    relay.faults.transient_failures = 1
    provider = smtp_provider(gf_db, keyring, project, relay)
    [message_id] = ledger.queue_messages(gf_db, project, provider, ["grey@example.com"])
    dispatcher.run_once()
    row = messages(gf_db, [message_id])[message_id]
    assert row.status == "deferred"
    assert row.attempts == 1
    assert row.due_at is not None
    assert row.last_reply
    assert "451" in row.last_reply
    found = run_until_final(dispatcher, gf_db, [message_id])
    assert (found[message_id].status, found[message_id].attempts) == ("sent", 2)
    steps = history(gf_db, message_id)
    assert [s for s, _ in steps] == ["queued", "deferred", "sent"]
    assert "451" in (steps[1][1] or "")
    assert header_ids(relay) == [message_id]  # the refused copy is in relay.rejected only
    assert len(relay.rejected) == 1


def test_a_connection_lost_after_the_final_dot_is_unknown_and_never_resent(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    relay.faults.drop_after_data = 1
    provider = smtp_provider(gf_db, keyring, project, relay)
    [message_id] = ledger.queue_messages(gf_db, project, provider, ["lost@example.com"])
    found = run_until_final(dispatcher, gf_db, [message_id])
    row = found[message_id]
    assert (row.status, row.attempts, row.due_at) == ("unknown", 1, None)
    assert row.last_reply
    assert "not sent again" in row.last_reply
    for _ in range(3):  # later cycles leave it alone
        dispatcher.run_once()
    assert messages(gf_db, [message_id])[message_id].status == "unknown"
    assert header_ids(relay) == [message_id]  # the relay kept the one copy it got
    assert [s for s, _ in history(gf_db, message_id)] == ["queued", "unknown"]


def test_refused_recipients_are_recorded_and_the_rest_of_the_batch_is_sent(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    relay.faults.refuse_recipients = {
        "nobody@example.com": (550, "5.1.1 No such user"),
        "full@example.com": (452, "4.2.2 Mailbox full"),
    }
    provider = smtp_provider(gf_db, keyring, project, relay)
    ids = ledger.queue_messages(
        gf_db, project, provider, ["a@example.com", "nobody@example.com", "full@example.com"]
    )
    dispatcher.run_once()
    found = messages(gf_db, ids)
    assert found[ids[0]].status == "sent"
    refused = found[ids[1]]
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert refused.last_reply
    assert "550 5.1.1 No such user" in refused.last_reply
    assert "nobody@example.com" in (history(gf_db, ids[1])[-1][1] or "")
    full = found[ids[2]]
    assert full.status == "deferred"
    assert full.last_reply
    assert "452" in full.last_reply
    assert header_ids(relay) == [ids[0]]


def test_a_550_fails_at_once_and_is_not_retried(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    relay.faults.permanent_failure, relay.faults.permanent_code = True, 550
    provider = smtp_provider(gf_db, keyring, project, relay)
    [message_id] = ledger.queue_messages(gf_db, project, provider, ["no@example.com"])
    found = run_until_final(dispatcher, gf_db, [message_id])
    for _ in range(3):
        dispatcher.run_once()
    row = messages(gf_db, [message_id])[message_id]
    assert (found[message_id].status, row.status, row.attempts) == ("failed", "failed", 1)
    assert row.last_reply
    assert row.last_reply.startswith("550")
    assert len(relay.rejected) == 1
    assert relay.messages == []
    assert [s for s, _ in history(gf_db, message_id)] == ["queued", "failed"]


def test_an_http_provider_answering_429_then_200_defers_then_sends(
    gf_db: Database, keyring: Keyring, project: str, dispatcher: Dispatcher,
) -> None:  # fmt: skip
    with PostmarkFake() as fake:
        fake.fail_next(429, headers={"Retry-After": "0"}, body={"ErrorCode": 429,
                       "Message": "Rate limit exceeded"})  # fmt: skip
        provider = ledger.add_provider(
            gf_db, keyring, project,
            {"provider": "postmark", "from_email": "hello@example.com", "api_url": fake.url,
             "server_token": fake.server_token},
        )  # fmt: skip
        [message_id] = ledger.queue_messages(gf_db, project, provider, ["pm@example.com"])
        dispatcher.run_once()
        row = messages(gf_db, [message_id])[message_id]
        assert row.status == "deferred"
        assert row.last_reply
        assert "429" in row.last_reply
        found = run_until_final(dispatcher, gf_db, [message_id])
        assert (found[message_id].status, found[message_id].attempts) == ("sent", 2)
        assert found[message_id].provider_message_id  # Postmark's MessageID
        [sent] = fake.messages
        assert sent.json["Metadata"][MESSAGE_ID_FIELD] == message_id
        headers = {h["Name"]: h["Value"] for h in sent.json.get("Headers", [])}
        assert headers[MESSAGE_ID_HEADER] == message_id
        assert [s for s, _ in history(gf_db, message_id)] == ["queued", "deferred", "sent"]


def test_an_http_provider_with_a_batch_endpoint_gets_a_chunk_in_one_request(
    gf_db: Database, keyring: Keyring, project: str, dispatcher: Dispatcher,
) -> None:  # fmt: skip
    with PostmarkFake(inactive={"gone@example.com"}) as fake:
        provider = ledger.add_provider(
            gf_db, keyring, project,
            {"provider": "postmark", "from_email": "hello@example.com", "api_url": fake.url,
             "server_token": fake.server_token},
        )  # fmt: skip
        addresses = ["a@example.com", "gone@example.com", "c@example.com"]
        ids = ledger.queue_messages(gf_db, project, provider, addresses)
        found = run_until_final(dispatcher, gf_db, ids)
        assert [found[i].status for i in ids] == ["sent", "failed", "sent"]
        assert [r.path for r in fake.requests] == ["/email/batch"]  # one request for three
        assert sorted(m.json["Metadata"][MESSAGE_ID_FIELD] for m in fake.messages) == sorted(
            [ids[0], ids[2]]
        )
        assert found[ids[0]].provider_message_id != found[ids[2]].provider_message_id
        refused = found[ids[1]].last_reply or ""
        assert "422" in refused  # judged as /email's refusal of that message would be


def test_a_suppressed_address_is_never_attempted(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    provider = smtp_provider(gf_db, keyring, project, relay)
    with gf_db.transaction() as session:
        session.add(Suppression(project_id=project, email="gone@example.com", reason="manual"))
    ids = ledger.queue_messages(gf_db, project, provider, ["Gone@Example.com", "ok@example.com"])
    found = run_until_final(dispatcher, gf_db, ids)
    assert (found[ids[0]].status, found[ids[0]].attempts) == ("suppressed", 0)
    assert found[ids[1]].status == "sent"
    assert [m.rcpt_tos for m in relay.messages] == [["ok@example.com"]]
    assert "suppression list (reason manual" in (history(gf_db, ids[0])[-1][1] or "")


def test_a_message_of_an_erased_profile_is_never_sent(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    provider = smtp_provider(gf_db, keyring, project, relay)
    profile = ledger.add_profile(gf_db, project, {"first_name": "Ada"})
    [message_id] = ledger.queue_messages(
        gf_db, project, provider, ["ada@example.com"], profile_id=profile
    )
    with gf_db.transaction() as session:
        session.execute(update(Profile).where(Profile.id == profile).values(erased_at=now()))
    found = run_until_final(dispatcher, gf_db, [message_id])
    assert (found[message_id].status, found[message_id].attempts) == ("suppressed", 0)
    assert relay.connections == 0
    assert relay.messages == []
    assert "erased" in (history(gf_db, message_id)[-1][1] or "")


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("{% for i in (1..100000000) %}x{% endfor %}", "loop"),
        ("{% assign s = 'xxxxxxxxxx' %}{% for i in (1..30) %}{% assign s = s | append: s %}"
         "{% endfor %}{{ s }}", "exceed"),
    ],
    ids=["endless-loop", "gigabytes"],
)  # fmt: skip
def test_a_template_that_cannot_render_fails_and_the_batch_goes_on(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher, html: str, reason: str,
) -> None:  # fmt: skip
    provider = smtp_provider(gf_db, keyring, project, relay)
    hostile = ledger.add_template(gf_db, project, "Hi", html=html)
    good = ledger.add_template(gf_db, project, "Hi {{ profile.name }}", text="Hello")
    [bad_id] = ledger.queue_messages(gf_db, project, provider, ["x@example.com"],
                                     template_id=hostile)  # fmt: skip
    profile = ledger.add_profile(gf_db, project, {"name": "Grace"})
    [good_id] = ledger.queue_messages(gf_db, project, provider, ["g@example.com"],
                                      template_id=good, profile_id=profile)  # fmt: skip
    found = run_until_final(dispatcher, gf_db, [bad_id, good_id])
    bad = found[bad_id]
    assert (bad.status, bad.attempts) == ("failed", 0)
    detail = history(gf_db, bad_id)[-1][1] or ""
    assert detail.startswith("the message could not be rendered: html")
    assert reason in detail
    assert found[good_id].status == "sent"
    [received] = relay.messages
    assert str(received.message["Subject"]) == "Hi Grace"


def test_a_message_deferred_past_the_maximum_age_fails(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    relay.faults.transient_failures = 5
    provider = smtp_provider(gf_db, keyring, project, relay)
    addresses = ["o@example.com", "y@example.com"]
    [old, young] = ledger.queue_messages(gf_db, project, provider, addresses)
    with gf_db.transaction() as session:
        session.execute(
            update(Message).where(Message.id == old)
            .values(created_at=now() - timedelta(hours=73))
        )  # fmt: skip
    dispatcher.run_once()
    found = messages(gf_db, [old, young])
    assert found[old].status == "failed"
    assert "given up: still failing after 72 hours" in (history(gf_db, old)[-1][1] or "")
    assert found[young].status == "deferred"


def test_a_lapsed_sending_lease_becomes_unknown_and_a_lapsed_claim_is_sent(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    provider = smtp_provider(gf_db, keyring, project, relay)
    addresses = ["s@example.com", "c@example.com"]
    sending, claimed = ledger.queue_messages(gf_db, project, provider, addresses)
    past = now() - timedelta(seconds=1)
    with gf_db.transaction() as session:  # what a worker killed mid-batch leaves behind
        for message_id, status in ((sending, "sending"), (claimed, "queued")):
            session.execute(
                update(Message).where(Message.id == message_id)
                .values(status=status, locked_by="dead/worker", lease_until=past, due_at=past)
            )  # fmt: skip
    found = run_until_final(dispatcher, gf_db, [sending, claimed])
    assert (found[sending].status, found[claimed].status) == ("unknown", "sent")
    assert header_ids(relay) == [claimed]
    assert "not resent automatically" in (history(gf_db, sending)[-1][1] or "")


def test_the_local_gate_holds_a_provider_to_its_rates_and_connections() -> None:
    clock = [100.0]
    gate = LocalSendGate(clock=lambda: clock[0])
    limits = ProviderLimits("prv_x", max_connections=1, rate_per_second=20, rate_per_hour=50)
    assert gate.take(limits, 50) == (20, pytest.approx(0.05))  # a second's burst
    assert gate.take(limits, 5)[0] == 0
    clock[0] += 0.5
    assert gate.take(limits, 50)[0] == 10  # 20 a second
    clock[0] += 10
    granted, wait = gate.take(limits, 50)
    assert granted == 20  # the hour's 50 are spent now
    assert 60 < wait <= 3600 / 50  # one more of the hourly 50, less what refilled meanwhile
    unlimited = ProviderLimits("prv_y")
    assert gate.take(unlimited, 10_000) == (10_000, 0.0)
    assert gate.acquire(limits, 0.0) is True
    assert gate.acquire(limits, 0.0) is False  # one connection at a time
    gate.release(limits)
    assert gate.acquire(limits, 0.0) is True


def test_a_provider_rate_limit_is_honoured_by_the_loop(
    gf_db: Database, keyring: Keyring, project: str, relay: SMTPTestServer,
    dispatcher: Dispatcher,
) -> None:  # fmt: skip
    provider = ledger.add_provider(
        gf_db, keyring, project, ledger.smtp_body(relay.host, relay.port), rate_per_hour=3
    )
    ids = ledger.queue_messages(gf_db, project, provider, [f"r{i}@example.com" for i in range(5)])
    dispatcher.run_once()
    found = messages(gf_db, ids)
    assert sorted(m.status for m in found.values()) == ["queued"] * 2 + ["sent"] * 3
    assert len(relay.messages) == 3
    waiting = [m for m in found.values() if m.status == "queued"]
    # Handed back without an attempt, due when the hour's budget allows one more.
    for row in waiting:
        assert (row.attempts, row.locked_by) == (0, None)
        assert row.due_at is not None
        assert row.due_at > now() + timedelta(minutes=15)


def test_delivery_settings_are_read_and_checked() -> None:
    key = {"GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate()}
    defaults = Settings.from_env(key)
    assert (defaults.delivery_threads, defaults.delivery_batch, defaults.delivery_chunk) == (
        2, 500, 50)  # fmt: skip
    assert defaults.delivery_max_age_seconds == 72 * 3600
    assert defaults.delivery_lease_seconds == 60
    chosen = Settings.from_env(
        {**key, "GETFLUXLY_DELIVERY_THREADS": "0", "GETFLUXLY_DELIVERY_CHUNK": "10",
         "GETFLUXLY_DELIVERY_MAX_AGE_SECONDS": "3600"}
    )  # fmt: skip
    assert (chosen.delivery_threads, chosen.delivery_chunk) == (0, 10)
    assert chosen.delivery_max_age_seconds == 3600
    bad = {"GETFLUXLY_DELIVERY_BATCH": "0", "GETFLUXLY_DELIVERY_BACKOFF_CAP_SECONDS": "soon"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**key, **bad})
    for name in bad:
        assert name in str(info.value)


def _claimed(attempts: int = 0, age: timedelta = timedelta(0)) -> ClaimedMessage:
    return ClaimedMessage(
        id="msg_x", project_id="prj_x", status="queued", to_email="a@example.com",
        profile_id=None, provider_id="prv_x", template_id=None, template_version=None,
        transactional=True, subject="s", html=None, text="t", data={}, tags={},
        idempotency_key=None, attempts=attempts, created_at=now() - age, erased_at=None,
    )  # fmt: skip


def test_verdicts_of_each_outcome() -> None:
    rng, moment = random.Random(1), now()
    accepted = DeliveryResult(
        "Q1", "250 2.0.0 Ok: queued as Q1", 3, accepted=("a@example.com",),
        refused={"b@example.com": "550 5.1.1 No such user"}, smtp_message_id="x@y",
    )  # fmt: skip
    sent = verdict(_claimed(), accepted, moment, QUICK, rng)
    assert (sent.status, sent.provider_message_id, sent.smtp_message_id) == ("sent", "Q1", "x@y")
    assert sent.last_reply is not None
    assert "b@example.com: 550 5.1.1 No such user" in sent.last_reply  # partial refusal kept
    rules = RetryRules(max_age=timedelta(hours=72), base_seconds=60, cap_seconds=600)
    later = DeliveryResult(None, "451 4.7.1 Try later", 1, outcome=Outcome.TRANSIENT)
    for attempts in range(12):
        deferred = verdict(_claimed(attempts), later, moment, rules, rng)
        assert deferred.status == "deferred"
        assert deferred.due_at is not None
        waited = (deferred.due_at - moment).total_seconds()
        assert 0 <= waited <= min(600, 60 * 2 ** (attempts + 1))
    told = DeliveryResult(None, "429", 1, outcome=Outcome.TRANSIENT, retry_after=42.0)
    assert verdict(_claimed(), told, moment, rules, rng).due_at == moment + timedelta(seconds=42)
    near_end = verdict(_claimed(9, timedelta(hours=71, minutes=59)), later, moment, rules, rng)
    assert near_end.due_at is not None
    # Never past the maximum age (72 h after created_at, a minute from now).
    assert near_end.due_at <= moment + timedelta(minutes=1, seconds=1)
    refused = DeliveryResult(None, "550 5.7.1 Rejected", 1, outcome=Outcome.PERMANENT)
    assert verdict(_claimed(), refused, moment, rules, rng).status == "failed"
    lost = DeliveryResult(None, "", 1, outcome=Outcome.UNKNOWN, detail="connection lost")
    assert verdict(_claimed(), lost, moment, rules, rng).status == "unknown"
