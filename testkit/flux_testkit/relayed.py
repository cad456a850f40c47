"""A GetFluxly server (``getfluxly serve``: API and workers) that sends through a real SMTP
relay on loopback, and what the tests read back from that relay."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from flux_testkit.gfserver import Backend, GFProject, GFServer, Harness, ServerEnv
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually


@dataclass
class Relayed:
    """The server, its relay, and one project whose default provider is that relay."""

    server: GFServer
    relay: SMTPTestServer
    project: GFProject

    def received(self, message_id: str) -> EmailMessage:
        """The message GetFluxly sent as ``message_id``, as the relay took it (waits for it)."""

        def find() -> EmailMessage | None:
            for received in list(self.relay.messages):
                if received.message["X-GetFluxly-Message-Id"] == message_id:
                    return received.message
            return None

        return eventually(find, f"{message_id} at the relay")

    def html(self, message_id: str) -> str:
        """The HTML part of :meth:`received`."""
        return html_of(self.received(message_id))

    def unsubscribe_url(self, message_id: str) -> str:
        """The one URL in the ``List-Unsubscribe`` header of :meth:`received`."""
        [url] = re.findall(r"<([^>]+)>", self.received(message_id)["List-Unsubscribe"])
        return str(url)


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None, "the message has no HTML part"
    return str(part.get_content())


@contextmanager
def relayed_server(
    harness: Harness,
    backend: Backend,
    directory: Path,
    project_name: str,
    env: ServerEnv | None = None,
) -> Iterator[Relayed]:
    """Start a server on a fresh ``backend`` database in ``directory`` with a relay (plain
    SMTP with AUTH) as the new project's SMTP provider; stop and drop it all on exit."""
    database = harness.database(backend, directory / "db")
    server = GFServer(harness, database, directory / "logs", env=env)
    relay = SMTPTestServer(tls="none", auth=True).start()
    try:
        server.start()
        project = server.create_project(project_name)
        server.create_smtp_provider(project.id, relay.host, relay.port)
        yield Relayed(server, relay, project)
    finally:
        server.close()
        relay.stop()
        database.close()
