"""The delivery interface a ledger builds on (issue 9): every outcome class against real
relays (the testkit's SMTP server with scripted faults) and the provider fakes, the GetFluxly
message id on every message, and the cached clients with warm connections.

Outcome classes (``Outcome``): ACCEPTED (partial refusals listed), TRANSIENT (retry with
backoff), PERMANENT (fail now), UNKNOWN (handed over, no answer: never resent automatically).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flux_testkit.gfserver import GFServer
from flux_testkit.provider_fakes import (
    FakeProviderServer,
    MailgunFake,
    PostmarkFake,
    Received,
    ResendFake,
    SendGridFake,
    SESFake,
    SMTP2GOFake,
)
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from getfluxly_server.delivery.base import (
    MESSAGE_ID_HEADER,
    BuildContext,
    DeliveryError,
    Outcome,
    OutgoingEmail,
    ProviderClient,
)
from getfluxly_server.delivery.clients import ClientCache
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.domain.providers import TEST_SEND, TestSend
from getfluxly_server.storage.db import Database

KEPT = BuildContext(timeout=5, keep_connections=True)
MESSAGE_ID = "msg_7k2m9x4q8w1e5r3t6y0u"
EMAIL = OutgoingEmail(
    from_email="hello@example.com",
    from_name="Acme",
    to=("ann@example.org",),
    subject="Welcome {{ name }}",  # data, never template source
    text="Hi {% raw %} there",
    html="<p>Hi <b>there</b> &amp; welcome</p>",
    message_id=MESSAGE_ID,
    idempotency_key="transactional:req_1",
)
USER, PASSWORD = "user@example.com", "s3cret-pass"


def smtp_client(relay: SMTPTestServer, context: BuildContext = KEPT) -> ProviderClient:
    config = {
        "smtp_host": relay.host,
        "smtp_port": relay.port,
        "smtp_secure": "none",
        "username": USER,
    }
    return PROVIDERS["smtp"].build(config, {"password": PASSWORD}, context)


@pytest.fixture
def relay(smtp_server: SMTPServerFactory) -> SMTPTestServer:
    return smtp_server(auth=True, auth_require_tls=False, pipelining=True)


# -- SMTP -----------------------------------------------------------------------------------


def test_smtp_accepted_carries_the_message_id_and_the_relays_answer(relay: SMTPTestServer) -> None:
    with smtp_client(relay) as client:
        result = client.deliver(EMAIL)
    assert result.outcome is Outcome.ACCEPTED, result
    assert result.reply.startswith("250")
    assert result.accepted == ("ann@example.org",)
    assert result.refused == {}
    [message] = relay.messages
    assert message.message[MESSAGE_ID_HEADER] == MESSAGE_ID
    assert result.smtp_message_id is not None
    assert message.message["Message-ID"] == f"<{result.smtp_message_id}>"
    # The content went through as data: no template syntax was interpreted or escaped away.
    assert message.message["Subject"] == "Welcome {{ name }}"
    text, html = (part.get_content() for part in message.message.iter_parts())
    assert text == "Hi {% raw %} there\n"
    assert html == "<p>Hi <b>there</b> &amp; welcome</p>\n"


def test_smtp_senders_and_ids_never_mix_across_messages(relay: SMTPTestServer) -> None:
    """Templates are kept per sender: each message still gets its own From, headers and id,
    and a caller's own X-GetFluxly-Message-Id header cannot stand in for the real one."""
    emails = [
        OutgoingEmail(from_email="a@example.com", from_name=name, to=("ann@example.org",),
                      subject=name, text="x", headers={MESSAGE_ID_HEADER: "spoofed", **extra},
                      message_id=f"msg_{i}")
        for i, (name, extra) in enumerate(
            [("Acme", {}), ("Other, Inc.", {"X-Tag": "t"}), ("Acme", {}), ("Acme", {"X-Tag": "u"})]
        )
    ]  # fmt: skip
    with smtp_client(relay) as client:
        assert all(client.deliver(email).ok for email in emails)
    for email, received in zip(emails, relay.messages, strict=True):
        message = received.message
        assert message.get_all(MESSAGE_ID_HEADER) == [email.message_id]
        assert message["From"].addresses[0].display_name == email.from_name
        assert message.get("X-Tag") == email.headers.get("X-Tag")


def test_smtp_cached_client_keeps_one_warm_connection(relay: SMTPTestServer) -> None:
    with smtp_client(relay) as client:
        for _ in range(3):
            assert client.deliver(EMAIL).ok
    assert len(relay.messages) == 3
    assert relay.connections == 1  # one login for three messages
    assert relay.commands[-1] == "QUIT"  # closed politely by close()


def test_smtp_one_off_client_leaves_nothing_open(relay: SMTPTestServer) -> None:
    client = smtp_client(relay, BuildContext(timeout=5))
    for _ in range(2):
        assert client.send(EMAIL).ok
    assert relay.connections == 2
    assert relay.commands.count("QUIT") == 2


def test_smtp_threads_share_one_client_within_its_connection_cap(relay: SMTPTestServer) -> None:
    emails = [
        OutgoingEmail(from_email="hello@example.com", to=(f"u{i}@example.org",), subject=f"#{i}",
                      text="x", message_id=f"msg_{i}")
        for i in range(24)
    ]  # fmt: skip
    with smtp_client(relay) as client, ThreadPoolExecutor(8) as threads:
        results = list(threads.map(client.deliver, emails))
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 24
    assert sorted(m.message[MESSAGE_ID_HEADER] for m in relay.messages) == sorted(
        e.message_id for e in emails if e.message_id
    )
    assert relay.connections <= 4  # smtp.MAX_CONNECTIONS, not one per message


def batch(count: int) -> list[OutgoingEmail]:
    return [
        OutgoingEmail(from_email="hello@example.com", to=(f"u{i}@example.org",),
                      subject=f"#{i}", text="x", message_id=f"msg_b{i}")
        for i in range(count)
    ]  # fmt: skip


def test_smtp_deliver_many_pipelines_down_one_warm_connection(relay: SMTPTestServer) -> None:
    emails = batch(20)
    emails[7] = OutgoingEmail(from_email="hello@example.com", to=("u7@example.org",),
                              subject="bad", text="x", headers={"Bad:Name": "x"})  # fmt: skip
    with smtp_client(relay) as client:
        results = client.deliver_many(emails)
    assert len(results) == 20
    assert (results[7].outcome, results[7].code) == (Outcome.PERMANENT, "rejected")
    assert all(r.ok for i, r in enumerate(results) if i != 7)
    assert [m.message[MESSAGE_ID_HEADER] for m in relay.messages] == [
        e.message_id for i, e in enumerate(emails) if i != 7
    ]
    assert relay.connections == 1


def test_smtp_deliver_many_marks_only_the_message_in_flight_unknown(
    smtp_server: SMTPServerFactory,
) -> None:
    relay = smtp_server(
        auth=True, auth_require_tls=False, pipelining=True,
        faults=Faults(drop_after_data=1, refuse_recipients={"u3@example.org": (550, "5.1.1 no")}),
    )  # fmt: skip
    with smtp_client(relay) as client:
        first = client.deliver_many(batch(5))
        again = client.deliver_many(
            [e for e, r in zip(batch(5), first, strict=True) if r.outcome.retry]
        )
    assert first[0].outcome is Outcome.UNKNOWN  # the relay has it: never resent
    assert all(r.outcome is Outcome.TRANSIENT for r in first[1:]), first
    assert [r.outcome for r in again] == [
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
        Outcome.PERMANENT,
        Outcome.ACCEPTED,
    ]
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
        "u0@example.org",
        "u1@example.org",
        "u2@example.org",
        "u4@example.org",
    ]  # each exactly once


def test_smtp_greylisting_is_transient_then_accepted(smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(transient_failures=1))
    with smtp_client(relay) as client:
        first, second = client.deliver(EMAIL), client.deliver(EMAIL)
    assert (first.outcome, first.code) == (Outcome.TRANSIENT, "deferred")
    assert first.outcome.retry
    assert first.reply.startswith("451")
    assert second.outcome is Outcome.ACCEPTED
    assert len(relay.messages) == 1


def test_smtp_5xx_is_permanent_and_not_retried(smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(permanent_failure=True))
    with smtp_client(relay) as client:
        result = client.deliver(EMAIL)
        with pytest.raises(DeliveryError) as raised:
            client.send(EMAIL)
    assert (result.outcome, result.code) == (Outcome.PERMANENT, "rejected")
    assert not result.outcome.retry
    assert result.reply.startswith("554")
    assert raised.value.outcome is Outcome.PERMANENT
    assert len(relay.rejected) == 2  # one DATA per call: nothing retried behind our back


def test_smtp_partial_refusal_is_accepted_with_the_refusals(smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(
        auth=True,
        auth_require_tls=False,
        faults=Faults(refuse_recipients={"bob@example.org": (550, "5.1.1 No such user")}),
    )
    email = OutgoingEmail(
        from_email="hello@example.com", to=("ann@example.org", "bob@example.org"), subject="s",
        text="x", message_id=MESSAGE_ID,
    )  # fmt: skip
    with smtp_client(relay) as client:
        partial = client.deliver(email)
        total = client.deliver(OutgoingEmail(
            from_email="hello@example.com", to=("bob@example.org",), subject="s", text="x",
        ))  # fmt: skip
    assert partial.outcome is Outcome.ACCEPTED
    assert partial.accepted == ("ann@example.org",)
    assert partial.refused == {"bob@example.org": "550 5.1.1 No such user"}
    assert (total.outcome, total.code) == (Outcome.PERMANENT, "rejected")
    assert total.refused == {"bob@example.org": "550 5.1.1 No such user"}


def test_smtp_drop_after_the_data_is_unknown_and_never_resent(
    smtp_server: SMTPServerFactory,
) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(drop_in_data=1))
    with smtp_client(relay) as client:
        result = client.deliver(EMAIL)
    assert (result.outcome, result.code) == (Outcome.UNKNOWN, "delivery_unknown")
    assert not result.outcome.retry
    assert "not sent again" in result.detail
    assert relay.commands.count("DATA") == 1  # FluxMail did not resend it either


def test_smtp_drop_after_the_final_dot_is_unknown_though_the_relay_has_it(
    smtp_server: SMTPServerFactory,
) -> None:
    """The relay took the whole message and hung up before answering: it will deliver it, so
    resending would deliver it twice. UNKNOWN, and the next message opens a new connection."""
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(drop_after_data=1))
    with smtp_client(relay) as client:
        lost = client.deliver(EMAIL)
        after = client.deliver(EMAIL)
    assert (lost.outcome, lost.code) == (Outcome.UNKNOWN, "delivery_unknown")
    assert after.outcome is Outcome.ACCEPTED
    assert len(relay.messages) == 2  # the lost one is there once, never resent
    assert relay.connections == 2


def test_smtp_no_final_reply_in_time_is_unknown(smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(delay_reply_seconds=2))
    with smtp_client(relay, BuildContext(timeout=0.3, keep_connections=True)) as client:
        result = client.deliver(EMAIL)
    assert result.outcome is Outcome.UNKNOWN


def test_smtp_drop_before_the_data_is_transient(smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, faults=Faults(drop_after_messages=0))
    with smtp_client(relay) as client:
        result = client.deliver(EMAIL)
    assert result.outcome is Outcome.TRANSIENT
    assert relay.messages == []


def test_smtp_unreachable_relay_is_transient() -> None:
    config = {"smtp_host": "127.0.0.1", "smtp_port": closed_port(), "smtp_secure": "none",
              "username": USER}  # fmt: skip
    with PROVIDERS["smtp"].build(config, {"password": PASSWORD}, KEPT) as client:
        result = client.deliver(EMAIL)
    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "connection_refused")


def test_smtp_wrong_password_is_permanent(relay: SMTPTestServer) -> None:
    config = {"smtp_host": relay.host, "smtp_port": relay.port, "smtp_secure": "none",
              "username": USER}  # fmt: skip
    with PROVIDERS["smtp"].build(config, {"password": "wrong"}, KEPT) as client:
        result = client.deliver(EMAIL)
    assert (result.outcome, result.code) == (Outcome.PERMANENT, "auth_failed")


# -- HTTP providers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    fake: Callable[[], FakeProviderServer]
    settings: Callable[[Any], dict[str, str]]
    #: Where the message id came through: (in the provider's metadata field, in a header).
    carried: Callable[[Received], tuple[str | None, str | None]]


def _named(items: Any, name: str, key: str = "Name", value: str = "Value") -> str | None:
    found = [i[value] for i in items or [] if isinstance(i, dict) and i.get(key) == name]
    return found[0] if found else None


CASES = [
    Case("postmark", PostmarkFake, lambda f: {"server_token": f.server_token},
         lambda r: (r.json["Metadata"]["getfluxly_message_id"],
                    _named(r.json["Headers"], MESSAGE_ID_HEADER))),
    Case("sendgrid", SendGridFake, lambda f: {"api_key": f.api_key},
         lambda r: (r.json["custom_args"]["getfluxly_message_id"],
                    r.json["headers"][MESSAGE_ID_HEADER])),
    Case("mailgun", MailgunFake, lambda f: {"api_key": f.api_key, "domain": f.domain},
         lambda r: (r.form["v:getfluxly_message_id"][0], r.form[f"h:{MESSAGE_ID_HEADER}"][0])),
    Case("resend", ResendFake, lambda f: {"api_key": f.api_key},
         lambda r: (_named(r.json["tags"], "getfluxly_message_id", "name", "value"),
                    r.json["headers"][MESSAGE_ID_HEADER])),
    # SMTP2GO documents no metadata field: the custom header is what its webhooks report.
    Case("smtp2go", SMTP2GOFake, lambda f: {"api_key": f.api_key},
         lambda r: (None, _named(r.json["custom_headers"], MESSAGE_ID_HEADER, "header", "value"))),
    Case("ses", SESFake,
         lambda f: {"access_key_id": f.access_key_id, "secret_access_key": f.secret_access_key,
                    "region": f.region},
         lambda r: (_named(r.json["EmailTags"], "getfluxly_message_id"),
                    _named(r.json["Content"]["Simple"]["Headers"], MESSAGE_ID_HEADER))),
]  # fmt: skip


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    param: Case = request.param
    return param


@pytest.fixture
def fake(case: Case) -> Iterator[FakeProviderServer]:
    with case.fake() as server:
        yield server


def http_client(
    case: Case, fake: FakeProviderServer, context: BuildContext = KEPT
) -> ProviderClient:
    kind = PROVIDERS[case.name]
    settings = {**case.settings(fake), "api_url": fake.url}
    secrets = {k: v for k, v in settings.items() if k in kind.secret_fields}
    config = {k: v for k, v in settings.items() if k not in kind.secret_fields}
    return kind.build(config, secrets, context)


def test_http_message_id_travels_in_metadata_and_header(
    case: Case, fake: FakeProviderServer
) -> None:
    with http_client(case, fake) as client:
        result = client.deliver(EMAIL)
    assert result.outcome is Outcome.ACCEPTED, (result, fake.problems)
    [message] = fake.messages
    metadata, header = case.carried(message)
    assert header == MESSAGE_ID
    assert metadata in (MESSAGE_ID, None if case.name == "smtp2go" else MESSAGE_ID)


def test_http_without_a_message_id_sends_no_metadata(case: Case, fake: FakeProviderServer) -> None:
    plain = OutgoingEmail(from_email="hello@example.com", to=("ann@example.org",), subject="s",
                          text="x")  # fmt: skip
    with http_client(case, fake) as client:
        assert client.deliver(plain).ok
    assert MESSAGE_ID not in fake.messages[0].body.decode()
    assert fake.problems == []


def test_http_429_is_transient_with_the_providers_wait(
    case: Case, fake: FakeProviderServer
) -> None:
    throttled = fake.error(429)
    fake.fail_next(429, throttled.body, headers={**throttled.headers, "Retry-After": "7"})
    with http_client(case, fake) as client:
        result = client.deliver(EMAIL)
        again = client.deliver(EMAIL)
    assert (result.outcome, result.code, result.retry_after) == (Outcome.TRANSIENT, "deferred", 7)
    assert result.reply == "429 Too Many Requests"
    assert again.outcome is Outcome.ACCEPTED  # 429 then 200
    assert len(fake.messages) == 1


@pytest.mark.parametrize(("status", "outcome"), [(500, Outcome.TRANSIENT), (503, Outcome.TRANSIENT),
                                                 (400, Outcome.PERMANENT)])  # fmt: skip
def test_http_status_classes(
    case: Case, fake: FakeProviderServer, status: int, outcome: Outcome
) -> None:
    fake.fail_next(status, message="internal detail 7f3a")
    with http_client(case, fake) as client:
        result = client.deliver(EMAIL)
    assert result.outcome is outcome
    assert "7f3a" not in result.detail  # never the upstream text


def test_http_connection_lost_after_the_request_is_unknown(
    case: Case, fake: FakeProviderServer
) -> None:
    with http_client(case, fake) as client:
        fake.reset_next()
        sending = client.deliver(EMAIL)
        fake.reset_next()
        with pytest.raises(DeliveryError) as checking:
            client.verify()
    assert (sending.outcome, sending.code) == (Outcome.UNKNOWN, "delivery_unknown")
    assert checking.value.outcome is Outcome.TRANSIENT  # a verification hands nothing over
    assert len(fake.requests) == 2  # each was received, and neither was sent twice
    assert fake.problems == []


def test_http_closed_client_refuses_and_stays_closed(case: Case, fake: FakeProviderServer) -> None:
    client = http_client(case, fake)
    assert client.deliver(EMAIL).ok
    client.close()
    client.close()  # idempotent
    assert client.deliver(EMAIL).outcome is Outcome.TRANSIENT
    assert len(fake.messages) == 1


def test_outcomes_map_onto_the_ledgers_statuses_and_retry() -> None:
    assert {o.status: o.retry for o in Outcome} == {
        "sent": False, "deferred": True, "failed": False, "unknown": False,
    }  # fmt: skip


# -- the client cache -----------------------------------------------------------------------


class Recorder:
    """A ProviderClient stand-in that records whether it was closed."""

    def __init__(self, label: str) -> None:
        self.label, self.closed = label, 0

    def verify(self) -> list[str]:
        return []

    def close(self) -> None:
        self.closed += 1


def test_cache_keeps_one_client_per_provider_version() -> None:
    cache = ClientCache()
    built: list[Recorder] = []

    def build(label: str) -> Callable[[], Any]:
        def make() -> Recorder:
            built.append(Recorder(label))
            return built[-1]

        return make

    first = cache.get("prv_a", "v1", build("a1"))
    assert cache.get("prv_a", "v1", build("a1 again")) is first
    edited = cache.get("prv_a", "v2", build("a2"))  # the provider was edited
    assert edited is not first
    assert first.closed == 1
    other = cache.get("prv_b", "v1", build("b1"))
    assert [r.label for r in built] == ["a1", "a2", "b1"]
    cache.forget("prv_b")
    assert other.closed == 1
    cache.close()
    assert edited.closed == 1
    assert len(cache) == 0


def test_cache_evicts_the_least_recently_used() -> None:
    cache = ClientCache(max_clients=2)
    a = cache.get("a", "1", lambda: Recorder("a"))  # type: ignore[arg-type,return-value]
    b = cache.get("b", "1", lambda: Recorder("b"))  # type: ignore[arg-type,return-value]
    cache.get("a", "1", lambda: Recorder("a2"))  # type: ignore[arg-type,return-value]
    cache.get("c", "1", lambda: Recorder("c"))  # type: ignore[arg-type,return-value]
    assert (a.closed, b.closed) == (0, 1)
    cache.close()


def test_cache_races_build_once_per_winner() -> None:
    cache = ClientCache()
    gate = threading.Barrier(8)
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder(str(len(made))))
        return made[-1]

    def get(_: int) -> object:
        gate.wait()
        return cache.get("prv", "v", make)  # type: ignore[arg-type]

    with ThreadPoolExecutor(8) as threads:
        got = set(map(id, threads.map(get, range(8))))
    assert len(got) == 1  # everyone uses the same client
    assert sum(r.closed for r in made) == len(made) - 1  # the losers' clients were closed
    cache.close()


def test_the_worker_closes_its_kept_clients_when_it_stops(
    relay: SMTPTestServer, tmp_path: Path
) -> None:
    from getfluxly_server.app import create_worker
    from getfluxly_server.crypto import Keyring
    from getfluxly_server.settings import Settings
    from getfluxly_server.storage.db import Database

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        keyring=Keyring.parse(Keyring.generate("k1")),
    )
    db = Database(settings.database_url)
    try:
        worker = create_worker(settings, db, threads=1)
        clients: ClientCache = worker.clients  # type: ignore[attr-defined]
        client = clients.get("prv_1", "v1", lambda: smtp_client(relay))
        assert client.deliver(EMAIL).ok
        assert relay.commands[-1] != "QUIT"  # warm, held by the worker's cache
        worker.stop()
        assert relay.commands[-1] == "QUIT"
        assert len(clients) == 0
    finally:
        db.dispose()


# -- through the server: the worker's kept client follows an edited provider ----------------


def test_an_edited_provider_gets_a_new_client_in_the_worker(
    gf_server: GFServer, smtp_server: SMTPServerFactory
) -> None:
    """Test-send jobs run in the worker through its kept client (a warm connection). PATCHing
    the provider to another relay changes its version (updated_at): the next send goes there.
    The jobs go straight into the queue: the API's test send runs inline, not in a worker."""
    first = smtp_server(auth=True, auth_require_tls=False, users={USER: PASSWORD})
    second = smtp_server(auth=True, auth_require_tls=False, users={USER: PASSWORD})
    project = gf_server.create_project()
    http = gf_server.client()
    try:
        body = {
            "provider": "smtp", "display_name": "Relay", "from_email": "hello@example.com",
            "smtp_host": "127.0.0.1", "smtp_port": first.port, "smtp_secure": "none",
            "username": USER, "password": PASSWORD,
        }  # fmt: skip
        created = http.post(f"/v1/projects/{project.id}/email-providers", json=body)
        assert created.status_code == 201, created.text
        provider = created.json()["email_provider"]["id"]
        with _opened(gf_server) as database:
            for _ in range(2):  # one after the other: the second reuses the first's connection
                _queue_test_send(database, provider, "a@example.org")
            assert [m.rcpt_tos for m in first.wait_for_messages(2)] == [["a@example.org"]] * 2
            moved = http.patch(f"/v1/email-providers/{provider}", json={"smtp_port": second.port})
            assert moved.status_code == 200, moved.text
            _queue_test_send(database, provider, "b@example.org")
            assert [m.rcpt_tos for m in second.wait_for_messages(1)] == [["b@example.org"]]
    finally:
        http.close()
    # verify() opened one connection to each relay; the sends shared one warm connection.
    assert first.connections == 2
    assert second.connections == 2
    for relay in (first, second):  # test sends have no ledger entry, so no id header
        assert all(m.message[MESSAGE_ID_HEADER] is None for m in relay.messages)


@contextmanager
def _opened(server: GFServer) -> Iterator[Database]:
    """The server's database opened in this process the way the server opens it."""
    database = Database(server.database.sqlalchemy_url)
    try:
        yield database
    finally:
        database.dispose()


def _queue_test_send(database: Database, provider_id: str, to: str) -> None:
    """Queue a test send and wait until the worker has finished it (its connection is back in
    the kept client's pool before the next one is queued)."""
    with database.transaction() as session:
        TEST_SEND.enqueue(session, TestSend(provider_id=provider_id, to=to))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with database.read() as session:
            pending = session.scalar(text("SELECT count(*) FROM jobs WHERE status <> 'done'"))
        if pending == 0:
            return
        time.sleep(0.02)
    raise AssertionError("the worker did not finish the test send within 30 s")
