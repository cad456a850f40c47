"""Scenario tests of automations against the real server: the API process (``getfluxly
api``, no workers of its own) serves the calls a client makes (automations created with the
HTTP API, events sent to ``/v1/events``), and this process runs the real worker
(``app.create_worker``: ingest, the automation runner, the delivery loop) on the same database
with a :class:`~getfluxly_server.domain.clock.ManualClock`, driven a cycle at a time:
:meth:`Engine.settle` runs everything that is due until nothing moves, :meth:`Engine.advance`
moves the clock and settles. Mail goes to a real SMTP relay (the testkit's), counted there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx

from flux_testkit.gfserver import GFProject, GFServer
from flux_testkit.smtpd import SMTPTestServer


class Engine:
    """See the module docstring. ``start``: the engine clock's first moment."""

    def __init__(self, server: GFServer, relay: SMTPTestServer, start: datetime) -> None:
        from getfluxly_server.app import DeliveryWorker, create_worker
        from getfluxly_server.crypto import Keyring
        from getfluxly_server.domain.automations.runner import AutomationRunner
        from getfluxly_server.domain.clock import ManualClock
        from getfluxly_server.domain.delivery import Dispatcher
        from getfluxly_server.settings import Settings
        from getfluxly_server.storage.db import Database

        self.server = server
        self.relay = relay
        self.clock = ManualClock(start)
        settings = Settings(
            database_url=server.database.sqlalchemy_url,
            keyring=Keyring.parse(server.encryption_keys),
        )
        self.db = Database(settings.database_url)
        worker = create_worker(settings, self.db, threads=1, clock=self.clock)
        assert isinstance(worker, DeliveryWorker)
        self.worker = worker
        self.runner = next(r for r in worker.runners if isinstance(r, AutomationRunner))
        self.dispatcher = next(r for r in worker.runners if isinstance(r, Dispatcher))
        self.api = server.client()
        self.project: GFProject = server.create_project("Automations")
        self.provider = server.create_smtp_provider(self.project.id, relay.host, relay.port)
        self.ingest = server.client(self.project.secret_key)

    def close(self) -> None:
        self.worker.stop()
        self.db.dispose()

    # Driving.

    def settle(self, rounds: int = 200) -> None:
        """Run what is due now (jobs, runs, deliveries) until a round does nothing."""
        for _ in range(rounds):
            moved = 0
            while self.worker.run_once():
                moved += 1
            moved += self.runner.run_once()
            moved += self.dispatcher.run_once()
            if not moved:
                return
        raise AssertionError(f"the engine kept moving after {rounds} rounds")

    def advance(self, by: timedelta) -> None:
        """Move the engine's clock forward and run what came due."""
        self.clock.advance(by)
        self.settle()

    def advance_to(self, moment: datetime) -> None:
        self.clock.set(moment)
        self.settle()

    # The API.

    def template(self, name: str, subject: str | None = None) -> str:
        text = f"{name} for {{{{ profile.email }}}}"
        body = {"name": name, "subject": subject or name, "text": text}
        made = self.api.post(f"/v1/projects/{self.project.id}/templates", json=body)
        assert made.status_code == 201, made.text
        return str(made.json()["template"]["id"])

    def automation(self, body: Mapping[str, Any], *, activate: bool = True) -> dict[str, Any]:
        made = self.api.post(f"/v1/projects/{self.project.id}/automations", json=dict(body))
        assert made.status_code == 201, made.text
        automation: dict[str, Any] = made.json()["automation"]
        if activate:
            on = self.api.post(f"/v1/automations/{automation['id']}/activate")
            assert on.status_code == 200, on.text
            automation = on.json()["automation"]
        return automation

    def get(self, automation_id: str) -> dict[str, Any]:
        found = self.api.get(f"/v1/automations/{automation_id}")
        assert found.status_code == 200, found.text
        return dict(found.json()["automation"])

    def identify(self, user: str, **traits: Any) -> None:
        sent = self.ingest.post(
            "/v1/events", json={"type": "identify", "external_id": user, "traits": traits}
        )
        assert sent.status_code == 202, sent.text
        self.settle()

    def track(self, user: str, event: str, **properties: Any) -> httpx.Response:
        sent = self.ingest.post(
            "/v1/events", json={"event": event, "external_id": user, "properties": properties}
        )
        assert sent.status_code == 202, sent.text
        self.settle()
        return sent

    def profile_id(self, user: str) -> str:
        found = self.api.get(f"/v1/projects/{self.project.id}/profiles", params={"identity": user})
        assert found.status_code == 200, found.text
        [profile] = found.json()["profiles"]
        return str(profile["id"])

    # What arrived.

    def inbox(self) -> Counter[tuple[str, str]]:
        """(recipient, subject) of every message the relay accepted, counted."""
        return Counter((m.rcpt_tos[0], str(m.message["Subject"])) for m in self.relay.messages)

    def subjects(self, address: str) -> list[str]:
        return [str(m.message["Subject"]) for m in self.relay.messages if address in m.rcpt_tos]


@contextmanager
def engine(server: GFServer, relay: SMTPTestServer, start: datetime) -> Iterator[Engine]:
    made = Engine(server, relay, start)
    try:
        yield made
    finally:
        made.close()
