"""Automations end to end, on SQLite and PostgreSQL: the real API process (automations
created and events sent over HTTP), the real worker (ingest, the automation runner, the
delivery loop, the job handlers) in this process on the engine's ``ManualClock``, mail
counted at a real SMTP relay. See ``flux_testkit.automations``.

One API server per backend serves the module; each test makes its own project (and pauses
its automations at the end, so the next test's runner never meets them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from flux_testkit.automations import Engine, engine
from flux_testkit.gfserver import GFServer
from flux_testkit.httpfake import FakeService, Reply, Request

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import SMTPServerFactory

#: A Monday, 10:00 UTC, in winter (New York is UTC-5, Paris UTC+1).
MONDAY = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def api_server(gf_module_api: GFServer) -> GFServer:
    """``getfluxly api`` (no workers of its own) on a database of its own, per backend."""
    return gf_module_api


@pytest.fixture
def eng(api_server: GFServer, smtp_server: SMTPServerFactory) -> Iterator[Engine]:
    relay = smtp_server(tls="none", auth=True)
    with engine(api_server, relay, MONDAY) as made:
        yield made


def _send(step_id: str, template_id: str) -> dict[str, Any]:
    return {"id": step_id, "type": "send_email", "template_id": template_id}


def _welcome_series(eng: Engine, wait: str) -> dict[str, Any]:
    """On ``signed_up``: send "Welcome", wait ``wait``, send "Tips"."""
    welcome, tips = eng.template("Welcome"), eng.template("Tips")
    return eng.automation(
        {
            "name": "Welcome series",
            "trigger": {"event": "signed_up"},
            "steps": [
                _send("welcome", welcome),
                {"id": "wait", "type": "delay", "duration": wait},
                _send("tips", tips),
            ],
        }
    )


def test_welcome_series_sends_each_email_once_at_its_time(eng: Engine) -> None:
    automation = _welcome_series(eng, "P2D")
    eng.identify("ada", email="ada@example.com")
    eng.track("ada", "signed_up", plan="pro")
    assert eng.subjects("ada@example.com") == ["Welcome"]

    eng.advance(DAY + 23 * HOUR)
    assert eng.subjects("ada@example.com") == ["Welcome"]
    eng.advance(HOUR)
    assert eng.subjects("ada@example.com") == ["Welcome", "Tips"]

    # Signing up again does not start it again (re-entry "once"), however long after.
    eng.track("ada", "signed_up")
    eng.advance(5 * DAY)
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


def test_trial_nudge_takes_the_event_path_or_the_timeout_path(eng: Engine) -> None:
    thanks, nudge = eng.template("Thanks for connecting"), eng.template("Connect an integration")
    automation = eng.automation(
        {
            "name": "Trial nudge",
            "trigger": {"event": "trial_started"},
            "steps": [
                {
                    "id": "connected",
                    "type": "wait_for_event",
                    "event": "integration_connected",
                    "where": [{"property": "kind", "op": "neq", "value": "test"}],
                    "timeout": "P3D",
                    "on_event": [_send("thanks", thanks)],
                    "on_timeout": [_send("nudge", nudge)],
                }
            ],
        }
    )
    for user in ("bob", "carol"):
        eng.identify(user, email=f"{user}@example.com")
        eng.track(user, "trial_started")
    eng.advance(DAY)
    eng.track("bob", "integration_connected", kind="test")  # not the one awaited
    assert eng.subjects("bob@example.com") == []
    eng.track("bob", "integration_connected", kind="slack")
    assert eng.subjects("bob@example.com") == ["Thanks for connecting"]

    eng.advance(2 * DAY - HOUR)
    assert eng.subjects("carol@example.com") == []
    eng.advance(HOUR)
    assert eng.subjects("carol@example.com") == ["Connect an integration"]
    eng.advance(5 * DAY)
    assert eng.inbox() == {
        ("bob@example.com", "Thanks for connecting"): 1,
        ("carol@example.com", "Connect an integration"): 1,
    }
    stats = eng.get(automation["id"])["stats"]
    assert (stats["connected"]["event"], stats["connected"]["timed_out"]) == (1, 1)


def test_delay_until_nine_on_weekdays_in_the_profiles_zone_across_a_dst_change(
    eng: Engine,
) -> None:
    morning = eng.template("Good morning")
    changed = eng.api.patch(f"/v1/projects/{eng.project.id}", json={"timezone": "Europe/Paris"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["project"]["timezone"] == "Europe/Paris"
    eng.automation(
        {
            "name": "Morning",
            "trigger": {"event": "signed_up"},
            "steps": [
                {
                    "id": "nine",
                    "type": "delay",
                    "until": {"time": "09:00", "weekdays": [1, 2, 3, 4, 5]},
                },
                _send("hello", morning),
            ],
        }
    )
    # Friday 12 March 2027, 15:00 UTC. New York moves to summer time on Sunday 14 March.
    eng.advance_to(datetime(2027, 3, 12, 15, 0, tzinfo=UTC))
    eng.identify("nyc", email="nyc@example.com", timezone="America/New_York")
    eng.identify("paris", email="paris@example.com")  # no zone: the project's
    eng.identify("odd", email="odd@example.com", timezone="Not/AZone")  # not one: the project's
    for user in ("nyc", "paris", "odd"):
        eng.track(user, "signed_up")
    # Saturday and Sunday are not weekdays of the delay.
    eng.advance_to(datetime(2027, 3, 15, 7, 59, tzinfo=UTC))
    assert eng.inbox() == {}
    eng.advance(timedelta(minutes=1))  # 09:00 in Paris (winter: UTC+1)
    assert set(eng.inbox()) == {
        ("paris@example.com", "Good morning"),
        ("odd@example.com", "Good morning"),
    }
    # 09:00 in New York is 13:00 UTC now (EDT), where it was 14:00 UTC the week before.
    eng.advance_to(datetime(2027, 3, 15, 12, 59, tzinfo=UTC))
    assert eng.subjects("nyc@example.com") == []
    eng.advance(timedelta(minutes=1))
    assert eng.subjects("nyc@example.com") == ["Good morning"]


def test_quiet_hours_postpone_or_skip_in_the_profiles_zone(eng: Engine) -> None:
    later, dropped, after = eng.template("Postponed"), eng.template("Skipped"), eng.template("Next")
    quiet = {"start": "21:00", "end": "08:00"}
    eng.automation(
        {
            "name": "Postpone",
            "trigger": {"event": "late_postpone"},
            "quiet_hours": {**quiet, "action": "postpone"},
            "steps": [_send("later", later)],
        }
    )
    skipping = eng.automation(
        {
            "name": "Skip",
            "trigger": {"event": "late_skip"},
            "quiet_hours": {**quiet, "action": "skip"},
            "steps": [
                _send("dropped", dropped),
                {"id": "pause", "type": "delay", "duration": "PT12H"},
                _send("after", after),
            ],
        }
    )
    eng.identify("eve", email="eve@example.com", timezone="Europe/Paris")
    # 21:30 UTC is 22:30 in Paris: quiet.
    eng.advance_to(datetime(2027, 1, 4, 21, 30, tzinfo=UTC))
    eng.track("eve", "late_postpone")
    eng.track("eve", "late_skip")
    assert eng.inbox() == {}
    eng.advance_to(datetime(2027, 1, 5, 6, 59, tzinfo=UTC))  # 07:59 in Paris
    assert eng.inbox() == {}
    eng.advance(timedelta(minutes=1))  # 08:00 in Paris
    assert eng.subjects("eve@example.com") == ["Postponed"]
    eng.advance(4 * HOUR)  # 12 h after the skipped send: the next step sends
    assert eng.subjects("eve@example.com") == ["Postponed", "Next"]
    stats = eng.get(skipping["id"])["stats"]
    assert (stats["dropped"]["skipped"], stats["dropped"]["sent"]) == (1, 0)


def test_each_reentry_policy(eng: Engine) -> None:
    ids = {}
    for policy, reentry in (("once", "once"), ("always", "always"), ("after", {"after": "P7D"})):
        template = eng.template(f"Ping {policy}")
        ids[policy] = eng.automation(
            {
                "name": policy,
                "trigger": {"event": "ping"},
                "reentry": reentry,
                "steps": [
                    _send("send", template),
                    {"id": "hold", "type": "delay", "duration": "P1D"},
                ],
            }
        )["id"]
    eng.identify("fay", email="fay@example.com")
    eng.track("fay", "ping")  # day 0: every policy enters
    eng.advance(HOUR)
    eng.track("fay", "ping")  # a run under way: nobody enters again
    eng.advance(2 * DAY)
    eng.track("fay", "ping")  # day 2: "always" again; "after" waits for 7 days
    eng.advance(6 * DAY)
    eng.track("fay", "ping")  # day 8: "always" and "after"
    eng.advance(2 * DAY)
    assert eng.inbox() == {
        ("fay@example.com", "Ping once"): 1,
        ("fay@example.com", "Ping always"): 3,
        ("fay@example.com", "Ping after"): 2,
    }


def test_exit_on_an_event_in_the_middle_of_a_delay(eng: Engine) -> None:
    first, second = eng.template("Day 0"), eng.template("Day 3")
    automation = eng.automation(
        {
            "name": "Cart",
            "trigger": {"event": "cart_abandoned"},
            "exit_on": {
                "event": "purchased",
                "where": [{"property": "total", "op": "gt", "value": 0}],
            },
            "steps": [
                _send("first", first),
                {"id": "wait", "type": "delay", "duration": "P3D"},
                _send("second", second),
            ],
        }
    )
    for user in ("gus", "hal"):
        eng.identify(user, email=f"{user}@example.com")
        eng.track(user, "cart_abandoned")
    eng.advance(DAY)
    eng.track("gus", "purchased", total=0)  # does not match the exit's where
    eng.track("hal", "purchased", total=42)
    found = eng.get(automation["id"])
    assert found["runs"] == {"running": 1, "completed": 0, "exited": 1}
    eng.advance(3 * DAY)
    assert eng.subjects("gus@example.com") == ["Day 0", "Day 3"]
    assert eng.subjects("hal@example.com") == ["Day 0"]


def test_a_frequency_cap_counts_sends_of_every_automation_of_the_project(eng: Engine) -> None:
    one, two = eng.template("From A"), eng.template("From B")
    eng.automation(
        {"name": "A", "trigger": {"event": "a"}, "reentry": "always", "steps": [_send("a", one)]}
    )
    capped = eng.automation(
        {
            "name": "B",
            "trigger": {"event": "b"},
            "reentry": "always",
            "frequency_cap": {"max": 1, "per": "P1D"},
            "steps": [_send("b", two)],
        }
    )
    eng.identify("ida", email="ida@example.com")
    eng.track("ida", "a")
    eng.advance(HOUR)
    eng.track("ida", "b")  # A sent one within the day: B's cap holds this one back
    assert eng.subjects("ida@example.com") == ["From A"]
    eng.advance(DAY)
    eng.track("ida", "b")
    assert eng.subjects("ida@example.com") == ["From A", "From B"]
    stats = eng.get(capped["id"])["stats"]["b"]
    assert (stats["capped"], stats["sent"]) == (1, 1)


def test_segment_entered_and_left_triggers(eng: Engine) -> None:
    hello, bye = eng.template("Welcome to VIP"), eng.template("Sorry to see you go")
    made = eng.api.post(
        f"/v1/projects/{eng.project.id}/segments",
        json={"name": "VIP", "rule": {"trait": "vip", "op": "eq", "value": True}},
    )
    assert made.status_code == 201, made.text
    segment_id = made.json()["segment"]["id"]
    eng.identify("early", email="early@example.com", vip=True)  # in before the automation
    eng.automation(
        {"name": "In", "trigger": {"segment_entered": segment_id}, "steps": [_send("hi", hello)]}
    )
    eng.automation(
        {"name": "Out", "trigger": {"segment_left": segment_id}, "steps": [_send("bye", bye)]}
    )
    eng.identify("jon", email="jon@example.com", vip=True)
    assert eng.subjects("jon@example.com") == ["Welcome to VIP"]
    eng.identify("jon", vip=False)
    assert eng.subjects("jon@example.com") == ["Welcome to VIP", "Sorry to see you go"]
    assert eng.subjects("early@example.com") == []  # entered before: no run


def test_a_branch_on_a_segment_rule(eng: Engine) -> None:
    pro, upgrade = eng.template("Pro tips"), eng.template("Upgrade")
    automation = eng.automation(
        {
            "name": "Plan",
            "trigger": {"event": "signed_up"},
            "steps": [
                {
                    "id": "plan",
                    "type": "branch",
                    "rule": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]},
                    "then": [_send("pro", pro)],
                    "else": [_send("upgrade", upgrade)],
                }
            ],
        }
    )
    eng.identify("pat", email="pat@example.com", plan="pro")
    eng.identify("sam", email="sam@example.com", plan="free")
    eng.track("pat", "signed_up")
    eng.track("sam", "signed_up")
    assert eng.inbox() == {("pat@example.com", "Pro tips"): 1, ("sam@example.com", "Upgrade"): 1}
    stats = eng.get(automation["id"])["stats"]["plan"]
    assert (stats["then"], stats["else"]) == (1, 1)


def test_an_alias_merge_mid_journey_continues_once(eng: Engine) -> None:
    automation = _welcome_series(eng, "P1D")
    eng.identify("kim", email="kim@example.com")
    eng.track("kim", "signed_up")
    # The same person on another device, not yet known to be Kim, signs up there too.
    sent = eng.ingest.post(
        "/v1/events",
        json={
            "type": "identify",
            "anonymous_id": "device-1",
            "traits": {"email": "kim@example.com"},
        },
    )
    assert sent.status_code == 202
    sent = eng.ingest.post("/v1/events", json={"event": "signed_up", "anonymous_id": "device-1"})
    assert sent.status_code == 202
    eng.advance(HOUR)
    assert eng.get(automation["id"])["runs"]["running"] == 2
    # She logs in on that device: one person, two runs.
    sent = eng.ingest.post(
        "/v1/events", json={"type": "identify", "external_id": "kim", "anonymous_id": "device-1"}
    )
    assert sent.status_code == 202
    eng.advance(HOUR)
    assert eng.get(automation["id"])["runs"] == {"running": 1, "completed": 0, "exited": 1}
    eng.advance(2 * DAY)
    assert eng.inbox() == {("kim@example.com", "Welcome"): 2, ("kim@example.com", "Tips"): 1}


def test_a_date_trait_trigger_fires_once_per_date(eng: Engine) -> None:
    reminder = eng.template("Trial ends in 3 days")
    eng.automation(
        {
            "name": "Trial ending",
            "trigger": {"date_trait": "trial_ends_at", "offset": "-P3D"},
            "reentry": "always",
            "steps": [_send("remind", reminder)],
        }
    )
    ends = MONDAY + 10 * DAY
    eng.identify("lee", email="lee@example.com", trial_ends_at=ends.isoformat())
    # A date long past when the automation was activated (by the API, on the real clock).
    eng.identify("old", email="old@example.com", trial_ends_at="2025-06-01T00:00:00Z")
    eng.advance(6 * DAY)
    assert eng.inbox() == {}
    eng.advance(DAY + HOUR)  # ten days less three: due
    assert eng.subjects("lee@example.com") == ["Trial ends in 3 days"]
    eng.advance(DAY)  # the same date does not fire again
    assert eng.subjects("lee@example.com") == ["Trial ends in 3 days"]
    assert eng.subjects("old@example.com") == []  # due before the automation was active


class _Hook(FakeService):
    request_type = Request

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Request] = []
        self.lock = threading.Lock()

    def _dispatch(self, request: Any) -> Reply:
        with self.lock:
            self.received.append(request)
        return Reply.json(200, {"ok": True})

    def _note(self, problem: str) -> None:
        raise AssertionError(problem)


def test_update_traits_a_webhook_and_an_exit_step(eng: Engine) -> None:
    with _Hook() as hook:
        eng.automation(
            {
                "name": "Onboarded",
                "trigger": {"event": "onboarded"},
                "steps": [
                    {"id": "mark", "type": "update_traits", "traits": {"stage": "active"}},
                    {
                        "id": "tell",
                        "type": "webhook",
                        "url": f"{hook.url}/hook",
                        "body": {"hello": "crm"},
                    },
                    {"id": "stop", "type": "exit"},
                    {"id": "never", "type": "update_traits", "traits": {"stage": "unreachable"}},
                ],
            }
        )
        eng.identify("max", email="max@example.com")
        eng.track("max", "onboarded")
        profile = eng.api.get(
            f"/v1/projects/{eng.project.id}/profiles/{eng.profile_id('max')}"
        ).json()["profile"]
        assert profile["traits"]["stage"] == "active"
        [call] = hook.received
        assert call.json == {"hello": "crm"}
        assert call.headers["idempotency-key"].startswith("run_")


def test_a_paused_automation_holds_its_runs_and_an_edit_keeps_runs_on_their_version(
    eng: Engine,
) -> None:
    first, second, other = eng.template("One"), eng.template("Two"), eng.template("Other")
    automation = eng.automation(
        {
            "name": "Versions",
            "trigger": {"event": "go"},
            "reentry": "always",
            "steps": [
                _send("one", first),
                {"id": "wait", "type": "delay", "duration": "P1D"},
                _send("two", second),
            ],
        }
    )
    eng.identify("ned", email="ned@example.com")
    eng.track("ned", "go")
    paused = eng.api.post(f"/v1/automations/{automation['id']}/pause")
    assert paused.json()["automation"]["status"] == "paused"
    edited = eng.api.patch(
        f"/v1/automations/{automation['id']}",
        json={
            "steps": [
                _send("one", other),
                {"id": "wait", "type": "delay", "duration": "P1D"},
                _send("two", other),
            ]
        },
    )
    assert edited.json()["automation"]["version"] == 2
    eng.advance(2 * DAY)
    assert eng.subjects("ned@example.com") == ["One"]  # paused: the run waits
    eng.track("ned", "go")  # paused: nobody enters
    eng.api.post(f"/v1/automations/{automation['id']}/activate")
    eng.settle()
    # The run that entered version 1 finishes on version 1.
    assert eng.subjects("ned@example.com") == ["One", "Two"]
    eng.track("ned", "go")
    assert eng.subjects("ned@example.com") == ["One", "Two", "Other"]


def test_an_erasure_ends_the_persons_runs_and_scrubs_what_started_them(eng: Engine) -> None:
    from getfluxly_server.storage.models import AutomationRun

    first, second = eng.template("First"), eng.template("Second")
    eng.automation(
        {
            "name": "Series",
            "trigger": {"event": "signed_up"},
            "steps": [
                _send("first", first),
                {"id": "wait", "type": "delay", "duration": "P1D"},
                _send("second", second),
            ],
        }
    )
    eng.identify("zoe", email="zoe@example.com")
    eng.track("zoe", "signed_up", secret_mark="zoe-private-4711")
    profile_id = eng.profile_id("zoe")
    erased = eng.ingest.post(f"/v1/profiles/{profile_id}/erase", json={"reason": "gdpr_dsr"})
    assert erased.status_code == 202, erased.text
    eng.settle()
    eng.advance(2 * DAY)
    assert eng.subjects("zoe@example.com") == ["First"]
    with eng.db.read() as session:
        [run] = session.query(AutomationRun).filter_by(project_id=eng.project.id).all()
        assert (run.status, run.exit_reason, run.context) == ("exited", "erased", {})


def test_traits_an_automation_writes_move_the_person_into_segments(eng: Engine) -> None:
    gold = eng.template("Welcome to gold")
    made = eng.api.post(
        f"/v1/projects/{eng.project.id}/segments",
        json={"name": "Gold", "rule": {"trait": "tier", "op": "eq", "value": "gold"}},
    )
    assert made.status_code == 201, made.text
    eng.automation(
        {
            "name": "Upgrade",
            "trigger": {"event": "upgraded"},
            "steps": [{"id": "tier", "type": "update_traits", "traits": {"tier": "gold"}}],
        }
    )
    eng.automation(
        {
            "name": "Gold",
            "trigger": {"segment_entered": made.json()["segment"]["id"]},
            "steps": [_send("gold", gold)],
        }
    )
    eng.identify("una", email="una@example.com", tier="silver")
    eng.track("una", "upgraded")
    assert eng.subjects("una@example.com") == ["Welcome to gold"]
