"""An event's email with the API and the worker in processes of their own, on SQLite and
PostgreSQL: ``getfluxly serve --worker-process`` (the real CLI, as a subprocess) and
``getfluxly api`` beside ``getfluxly worker``.

Contract: the event stored by the API process wakes the worker process at once (on SQLite
through the wake-up channel beside the database file, on PostgreSQL through NOTIFY), which
stitches it, starts the automation's run and sends its email. The workers here poll once an
hour (``GETFLUXLY_JOB_POLL_SECONDS``), so only a wake-up that crossed the process boundary
can deliver the email within the test's timeout.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flux_testkit.gfserver import GFServer
from flux_testkit.waiting import eventually

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory
    from flux_testkit.smtpd import SMTPTestServer

#: No poll within the test: the job worker hears of new events by wake-ups only.
NO_POLL = {"GETFLUXLY_JOB_POLL_SECONDS": "3600"}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _welcome(server: GFServer, relay: SMTPTestServer) -> str:
    """A project whose active automation sends a welcome email on ``signed_up``, and a
    known person; returns the project's secret key."""
    api = server.client()
    project = server.create_project("Processes")
    server.create_smtp_provider(project.id, relay.host, relay.port)
    template = api.post(
        f"/v1/projects/{project.id}/templates",
        json={"name": "welcome", "subject": "Welcome", "text": "hello"},
    )
    assert template.status_code == 201, template.text
    made = api.post(
        f"/v1/projects/{project.id}/automations",
        json={
            "name": "Welcome",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "hi", "type": "send_email", "template_id": template.json()["template"]["id"]}
            ],
        },
    )
    assert made.status_code == 201, made.text
    automation = made.json()["automation"]["id"]
    assert api.post(f"/v1/automations/{automation}/activate").status_code == 200
    ingest = server.client(project.secret_key)
    known = {"type": "identify", "external_id": "ada", "traits": {"email": "ada@example.com"}}
    assert ingest.post("/v1/events", json=known).status_code == 202
    return project.secret_key


def _sign_up_and_receive(server: GFServer, relay: SMTPTestServer, key: str) -> None:
    ingest = server.client(key)
    answer = ingest.post("/v1/events", json={"event": "signed_up", "external_id": "ada"})
    assert answer.status_code == 202, answer.text
    [message] = relay.wait_for_messages(1, timeout=30)
    assert message.rcpt_tos == ["ada@example.com"]


def test_serve_with_a_worker_process_sends_an_events_email(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    relay = smtp_server(tls="none", auth=True)
    server = gf_server_factory(mode="serve", args=["--worker-process"], env=NO_POLL)
    assert server.process is not None
    children = _children(server.process.pid)
    assert len(children) == 2, "an API process and a worker process"
    key = _welcome(server, relay)
    eventually(lambda: server.database.query("SELECT 1 FROM profiles") != [], "ada's profile")
    _sign_up_and_receive(server, relay, key)
    recorded = "SELECT status FROM messages WHERE to_email = 'ada@example.com'"
    eventually(
        lambda: [r["status"] for r in server.database.query(recorded)] == ["sent"],
        "the ledger to record the message sent, once",
    )
    # SIGTERM stops both children in order.
    assert server.process.stop() == 0
    for child in children:
        eventually(lambda child=child: not Path(f"/proc/{child}").exists(), f"child {child} to end")


def test_an_api_process_wakes_a_separate_worker_process(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """``getfluxly api`` and ``getfluxly worker``: the worker process, woken by the API
    process's commit, stitches the event and sends the email."""
    relay = smtp_server(tls="none", auth=True)
    server = gf_server_factory(mode="api", env=NO_POLL)
    worker = server.start_worker()
    eventually(lambda: "worker started" in worker.logs(), "the worker process")
    key = _welcome(server, relay)
    eventually(lambda: server.database.query("SELECT 1 FROM profiles") != [], "ada's profile")
    _sign_up_and_receive(server, relay, key)  # (`api` runs no job threads: the worker did)
    # A worker that went away leaves the channel usable: the next one is woken too.
    worker.signal(signal.SIGKILL)
    second = server.start_worker()
    eventually(lambda: "worker started" in second.logs(), "the second worker process")
    time.sleep(0.5)  # (its dispatcher has made its first claim and sleeps)
    ingest = server.client(key)
    sent = ingest.post("/v1/events", json={"event": "page_viewed", "external_id": "ada"})
    assert sent.status_code == 202
    eventually(
        lambda: server.database.query("SELECT 1 FROM events WHERE processed_at IS NULL") == [],
        "the second worker to stitch the event",
    )
    if server.database_url.startswith("sqlite"):
        # The killed worker's socket was removed by the first wake-up that found it dead.
        channel = Path(server.database_url.split("///", 1)[1] + "-wake")
        owners = {entry.name.split("-", 1)[0] for entry in channel.iterdir()}
        assert owners == {str(second.pid)}
