"""The feedback loop end to end on the real server (``getfluxly serve``: API and workers), on
SQLite and PostgreSQL (issue 13, "How it is shown").

A message is sent through a local SMTP relay; the relay's hard bounce of it is posted to the
project's webhook URL (the generic schema, Standard Webhooks signed, naming the message by
its Message-ID as a relay would); the worker records it: the message is ``bounced``, the
address is suppressed (``hard_bounce``), and the next message to it is ``suppressed``, never
attempted. The same is shown for SES: its bounce arrives through SNS (a local stand-in serving
the signing certificate over HTTPS with the test CA), signed with the stand-in's RSA key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_testkit.gfserver import GFServer
from flux_testkit.waiting import eventually
from flux_testkit.webhook_cases import Case, Generic, Sent, Ses
from flux_testkit.webhook_signers import FakeSns, SnsSigner

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory


def _bounce_loop(server: GFServer, relay_port: int, case: Case) -> None:
    owner = server.client()
    project = server.create_project("Feedback")
    server.create_smtp_provider(project.id, "127.0.0.1", relay_port)
    issued = owner.post(f"/v1/projects/{project.id}/webhook-secrets", json=case.setup())
    assert issued.status_code == 201, issued.text
    case.keep(issued.json()["webhook_secret"])
    assert issued.json()["webhook_secret"]["url"].endswith(f"/webhooks/{case.relay}/{project.id}")

    sender = server.client(project.secret_key)
    queued = sender.post("/v1/messages", json={"to": "ada@example.com", "subject": "Hi",
                                                "text": "Hello"})  # fmt: skip
    assert queued.status_code == 202, queued.text
    message_id = queued.json()["message"]["id"]

    def message() -> dict[str, Any]:
        answer = owner.get(f"/v1/messages/{message_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()["message"]
        return found

    sent = eventually(lambda: (m := message())["status"] == "sent" and m, "the relay took it")
    assert sent["smtp_message_id"]
    bounced = Sent(message_id, "ada@example.com", sent["provider_message_id"] or "",
                   sent["smtp_message_id"])  # fmt: skip
    if isinstance(case, Ses):  # SES reports the id its API answered; the relay here is SMTP
        bounced = Sent(message_id, "ada@example.com", "ses-id-unknown", sent["smtp_message_id"])

    body, headers = case.post(bounced)
    posted = server.anonymous_client().post(
        f"/webhooks/{case.relay}/{project.id}", content=body, headers=headers
    )
    assert posted.status_code == 200, posted.text

    final = eventually(lambda: (m := message())["status"] == "bounced" and m, "the bounce recorded")
    assert [h["status"] for h in final["history"]][-1] == "bounced"
    listed = owner.get(f"/v1/projects/{project.id}/suppressions").json()["suppressions"]
    assert [(s["email"], s["reason"], s["message_id"]) for s in listed] == [
        ("ada@example.com", "hard_bounce", message_id)
    ]

    again = sender.post("/v1/messages", json={"to": "Ada@Example.com", "subject": "Again",
                                               "text": "Hello again"})  # fmt: skip
    assert again.status_code == 202, again.text
    assert again.json()["message"]["status"] == "suppressed"
    detail = again.json()["message"]["history"][0]["detail"]
    assert "suppression list" in detail
    assert "reason hard_bounce" in detail


def test_a_hard_bounce_posted_to_the_webhook_suppresses_the_next_send(
    gf_server: GFServer, smtp_server: SMTPServerFactory
) -> None:
    relay = smtp_server(tls="none", auth=True)
    _bounce_loop(gf_server, relay.port, Generic())
    assert len(relay.messages) == 1  # the first message only


def test_an_ses_bounce_through_sns_suppresses_too(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    signer = SnsSigner()
    with FakeSns(signer.certificate_pem) as sns:
        server = gf_server_factory(env=dict(sns.env()))
        relay = smtp_server(tls="none", auth=True)
        _bounce_loop(server, relay.port, Ses(sns, signer))
        assert len(relay.messages) == 1
        assert any(r.endswith(".pem") for r in sns.requests)
