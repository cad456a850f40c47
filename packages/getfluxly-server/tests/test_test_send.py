"""``POST /v1/email-providers/{id}/test`` sends from the request itself (no job, no worker,
no polling), bounded by ``GETFLUXLY_TEST_SEND_TIMEOUT``. Real server, both databases, a real
relay on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flux_testkit.gfserver import expect_error

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

RECIPIENT = "you@example.com"


def test_a_test_send_needs_no_worker_and_leaves_no_job(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """``getfluxly api`` runs no worker: the test send still goes out and is answered with
    the relay's reply, and the jobs table stays empty."""
    relay = smtp_server(tls="none", auth=True)
    server = gf_server_factory(mode="api")
    project = server.create_project()
    provider = server.create_smtp_provider(project.id, relay.host, relay.port)

    response = server.client().post(
        f"/v1/email-providers/{provider['id']}/test", json={"to": RECIPIENT}
    )

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert list(outcome) == ["accepted", "to", "reply", "provider_message_id", "elapsed_ms"]
    assert (outcome["accepted"], outcome["to"]) == (True, RECIPIENT)
    assert outcome["reply"].startswith("250")
    [message] = relay.wait_for_messages(1)
    assert message.rcpt_tos == [RECIPIENT]
    assert server.database.query("SELECT id FROM jobs") == []


def test_a_relay_slower_than_the_limit_is_a_timeout(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """The relay holds its reply to DATA longer than GETFLUXLY_TEST_SEND_TIMEOUT (1 s; the
    SMTP timeout is longer): the answer is 408 ``timeout`` saying what the limit was, and
    the server keeps answering meanwhile."""
    relay = smtp_server(tls="none", auth=True)
    env = {"GETFLUXLY_TEST_SEND_TIMEOUT": "1", "GETFLUXLY_SMTP_TIMEOUT": "30"}
    server = gf_server_factory(mode="api", env=env)
    project = server.create_project()
    provider = server.create_smtp_provider(project.id, relay.host, relay.port)
    relay.faults.delay_reply_seconds = 5

    response = server.client().post(
        f"/v1/email-providers/{provider['id']}/test", json={"to": RECIPIENT}
    )

    detail = expect_error(response, 408, "timeout")
    assert "1 s" in detail
    assert server.client().get("/healthz").status_code == 200
