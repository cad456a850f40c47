"""The bounce mailbox end to end, on SQLite and PostgreSQL: a message sent through an SMTP
relay with a VERP return path, a DSN about it mailed to GetFluxly's own SMTP listener, the
recipient suppressed, the next send ``suppressed``; complaints (ARF) joined by the original's
Message-ID; garbage accepted and ignored; ``getfluxly bounces --listen`` as a real process.

DSNs are the hand-written fixtures of ``flux_testkit/bounce_reports/`` (test_bounce_reports.py),
delivered with smtplib as an MTA would (empty envelope sender, to the VERP address).
"""

from __future__ import annotations

import signal
import smtplib
import time
from typing import TYPE_CHECKING, Any

import pytest

from flux_testkit.gfserver import GFProcess, GFProject, GFServer, free_port
from flux_testkit.outbound import Receiver, verify_signature
from flux_testkit.outbound import bounce_report as report
from flux_testkit.waiting import eventually

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

DOMAIN = "bounces.example.test"


def _create(server: GFServer, project_id: str, url: str, events: list[str]) -> dict[str, Any]:
    response = server.client().post(
        f"/v1/projects/{project_id}/webhooks", json={"url": url, "events": events}
    )
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()["webhook"]
    return webhook


def _send(server: GFServer, project: GFProject, to: str) -> dict[str, Any]:
    response = server.client(project.secret_key).post(
        "/v1/messages", json={"to": to, "subject": "Welcome aboard", "text": "Hello"}
    )
    assert response.status_code == 202, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def _message(server: GFServer, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = server.client().get(f"/v1/messages/{message_id}").json()["message"]
    return found


def _sent(server: GFServer, project: GFProject, to: str) -> dict[str, Any]:
    """A message to ``to``, once the relay took it."""
    queued = _send(server, project, to)
    return eventually(  # type: ignore[no-any-return]
        lambda: (m := _message(server, queued["id"]))["status"] == "sent" and m,
        f"message {queued['id']} sent",
    )


def _suppression(server: GFServer, project_id: str, email: str) -> dict[str, Any] | None:
    listed = (
        server.client()
        .get(f"/v1/projects/{project_id}/suppressions", params={"email": email})
        .json()["suppressions"]
    )
    return next((s for s in listed if s["email"] == email), None)


def _mail(port: int, raw: bytes, to: str, sender: str = "") -> None:
    """Deliver ``raw`` to the listener as an MTA delivers a bounce (null sender)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(sender, [to], raw)


@pytest.fixture
def setup(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> tuple[GFServer, GFProject, Any, int]:
    """``serve`` with the bounce mailbox on, a project sending through a local relay."""
    port = free_port()
    server = gf_server_factory(
        env={
            "GETFLUXLY_BOUNCE_LISTEN": f"127.0.0.1:{port}",
            "GETFLUXLY_BOUNCE_DOMAIN": DOMAIN,
            "GETFLUXLY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
        }
    )
    relay = smtp_server(tls="none", auth=True)
    project = server.create_project("Bounces")
    server.create_smtp_provider(project.id, relay.host, relay.port)
    return server, project, relay, port


def test_a_dsn_suppresses_its_recipient_and_the_next_send_is_suppressed(
    setup: tuple[GFServer, GFProject, Any, int],
) -> None:
    server, project, relay, port = setup
    with Receiver() as endpoint:
        hook = _create(server, project.id, endpoint.url, ["message.bounced"])
        message = _sent(server, project, "ada@recipient.test")
        verp = f"bounces+{message['id']}@{DOMAIN}"
        [received] = relay.wait_for_messages(1)
        # The envelope sender is the VERP return path; the From header is unchanged.
        assert received.mail_from == verp
        assert received.message["From"] == "GetFluxly Tests <hello@example.com>"

        dsn = report(
            "postfix_hard.eml", verp=verp, recipient="ada@recipient.test",
            message_id=message["smtp_message_id"],
            ledger_header=f"X-GetFluxly-Message-Id: {message['id']}",
        )  # fmt: skip
        _mail(port, dsn, verp)
        entry = eventually(
            lambda: _suppression(server, project.id, "ada@recipient.test"), "suppression"
        )
        assert (entry["reason"], entry["message_id"]) == ("hard_bounce", message["id"])
        bounced = _message(server, message["id"])
        assert bounced["status"] == "bounced"
        assert "bounce_mailbox" in bounced["history"][-1]["detail"]

        # The customer's endpoint hears of it, signed.
        eventually(lambda: endpoint.requests, "the webhook delivery")
        [request] = endpoint.requests
        verify_signature(hook["secret"], request)
        assert request.json["data"]["message_id"] == message["id"]
        assert request.json["data"]["source"] == "bounce_mailbox"
        assert request.json["data"]["bounce_type"] == "hard"

    # The same DSN delivered again (an MTA retrying) changes nothing.
    _mail(port, dsn, verp)
    events = server.database.query(
        "SELECT type, bounce_type, source FROM message_events WHERE message_id = :id",
        id=message["id"],
    )
    assert events == [{"type": "bounced", "bounce_type": "hard", "source": "bounce_mailbox"}]

    # The next send to the address is never attempted.
    again = _send(server, project, "ada@recipient.test")
    assert again["status"] == "suppressed", again
    time.sleep(0.3)
    assert len(relay.messages) == 1


def test_a_complaint_is_joined_by_message_id_and_a_soft_bounce_does_not_suppress(
    setup: tuple[GFServer, GFProject, Any, int],
) -> None:
    server, project, _relay, port = setup
    first = _sent(server, project, "bob@recipient.test")
    second = _sent(server, project, "carol@recipient.test")

    # A feedback loop report, mailed to a plain address of the bounce domain: no VERP, no
    # GetFluxly header in the quoted original, only its Message-ID.
    arf = report(
        "arf_abuse.eml", verp="newsletter@example.com", recipient="bob@recipient.test",
        message_id=first["smtp_message_id"], ledger_header="X-Mailer: App",
        fbl_address=f"fbl@{DOMAIN}",
    )  # fmt: skip
    _mail(port, arf, f"fbl@{DOMAIN}")
    entry = eventually(lambda: _suppression(server, project.id, "bob@recipient.test"), "complaint")
    assert (entry["reason"], entry["message_id"]) == ("complaint", first["id"])
    assert _message(server, first["id"])["status"] == "complained"

    # Exim gave up on a temporary failure: a soft bounce, recorded, not (yet) suppressing.
    verp = f"bounces+{second['id']}@{DOMAIN}"
    exim = report(
        "exim_failed.eml", verp=verp, recipient="carol@recipient.test",
        message_id=second["smtp_message_id"], status="4.2.2",
        smtp_reply="452 4.2.2 Mailbox full", ledger_header="X-Mailer: App",
    )  # fmt: skip
    _mail(port, exim, verp)
    events = eventually(
        lambda: server.database.query(
            "SELECT bounce_type, reason FROM message_events WHERE message_id = :id",
            id=second["id"],
        ),
        "soft bounce",
    )
    assert events == [{"bounce_type": "soft", "reason": "smtp; 452 4.2.2 Mailbox full"}]
    assert _suppression(server, project.id, "carol@recipient.test") is None


def test_garbage_is_accepted_and_ignored_and_strangers_are_refused(
    setup: tuple[GFServer, GFProject, Any, int],
) -> None:
    server, project, _relay, port = setup
    message = _sent(server, project, "dave@recipient.test")
    verp = f"bounces+{message['id']}@{DOMAIN}"
    unknown = f"bounces+msg_zzzzzzzzzzzzzzzzzzzz@{DOMAIN}"
    for raw, to in (
        (b"Subject: I am on holiday\r\n\r\nBack on Monday.\r\n", verp),
        (b"\x00\xff garbage \xfe" * 50, verp),
        # A DSN about a message this server never sent, to its return path.
        (report("postfix_hard.eml", verp=unknown, ledger_header="X-Mailer: x"), unknown),
    ):
        _mail(port, raw, to)  # 250: smtplib raises on anything else
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("")
        code, reply = smtp.rcpt("someone@elsewhere.test")
        assert code == 550
        assert DOMAIN.encode() in reply
    assert server.database.query("SELECT id FROM message_events") == []
    assert _message(server, message["id"])["status"] == "sent"
    assert _suppression(server, project.id, "dave@recipient.test") is None


def test_the_bounces_command_runs_the_mailbox_on_its_own(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    server = gf_server_factory(env={"GETFLUXLY_BOUNCE_DOMAIN": DOMAIN})
    relay = smtp_server(tls="none", auth=True)
    project = server.create_project("CLI bounces")
    server.create_smtp_provider(project.id, relay.host, relay.port)
    message = _sent(server, project, "erin@recipient.test")
    verp = f"bounces+{message['id']}@{DOMAIN}"

    # Usage errors: exit 2 with a message saying what to do.
    missing = server.cli("bounces", check=False)
    assert missing.returncode == 2
    assert "--listen HOST:PORT" in missing.stderr
    bad = server.cli("bounces", "--listen", "nowhere", check=False)
    assert bad.returncode == 2
    assert "HOST:PORT" in bad.stderr

    port = free_port()
    process = GFProcess(
        "bounces", ["bounces", "--listen", f"127.0.0.1:{port}"], server.env,
        server.log_dir / "90-bounces.log",
    )  # fmt: skip
    try:
        eventually(lambda: "listening on" in process.logs() or not process.alive, "listener start")
        assert process.alive, process.logs()
        dsn = report(
            "exim_failed.eml", verp=verp, recipient="erin@recipient.test",
            message_id=message["smtp_message_id"],
        )  # fmt: skip
        _mail(port, dsn, verp)
        entry = eventually(
            lambda: _suppression(server, project.id, "erin@recipient.test"), "bounce"
        )
        assert entry["reason"] == "hard_bounce"
    finally:
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0, process.logs()
