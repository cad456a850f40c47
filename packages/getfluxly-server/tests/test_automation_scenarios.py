"""Automations end to end, on SQLite and PostgreSQL: the real API process (automations
created and events sent over HTTP), the real worker (ingest, the automation runner, the
delivery loop) in this process on the engine's ``ManualClock``, mail counted at a real SMTP
relay. See ``flux_testkit.automations``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from flux_testkit.automations import Engine, engine
from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

#: A Monday, 10:00 UTC, in winter (New York is UTC-5).
MONDAY = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def eng(gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory) -> Iterator[Engine]:
    server = gf_server_factory(mode="api")
    relay = smtp_server(tls="none", auth=True)
    with engine(server, relay, MONDAY) as made:
        yield made


def test_welcome_series_sends_each_email_once_at_its_time(eng: Engine) -> None:
    welcome, tips = eng.template("Welcome"), eng.template("Tips")
    automation = eng.automation(
        {
            "name": "Welcome series",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "welcome", "type": "send_email", "template_id": welcome},
                {"id": "wait", "type": "delay", "duration": "P2D"},
                {"id": "tips", "type": "send_email", "template_id": tips},
            ],
        }
    )
    eng.identify("ada", email="ada@example.com")
    eng.track("ada", "signed_up", plan="pro")
    assert eng.subjects("ada@example.com") == ["Welcome"]

    eng.advance(timedelta(days=1, hours=23))
    assert eng.subjects("ada@example.com") == ["Welcome"]
    eng.advance(timedelta(hours=1))
    assert eng.subjects("ada@example.com") == ["Welcome", "Tips"]

    # Signing up again does not start it again (re-entry "once"), however long after.
    eng.track("ada", "signed_up")
    eng.advance(timedelta(days=5))
    assert eng.subjects("ada@example.com") == ["Welcome", "Tips"]
    found = eng.get(automation["id"])
    assert found["stats"]["welcome"]["sent"] == 1
    assert found["stats"]["wait"] == {"entered": 1, "completed": 1, "sent": 0}
    assert found["stats"]["tips"]["sent"] == 1
    assert found["runs"] == {"running": 0, "completed": 1, "exited": 0}
    # The ledger knows which automation and step sent each message.
    listed = eng.api.get(
        f"/v1/projects/{eng.project.id}/messages", params={"automation_id": automation["id"]}
    ).json()["messages"]
    assert sorted(m["step_id"] for m in listed) == ["tips", "welcome"]
