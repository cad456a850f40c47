"""The dashboard's engine pages, over HTTP against the real server (its segment consumer,
automation runner, broadcast runner and delivery workers) on SQLite and PostgreSQL:

* segments: the rule builder writes the spec's grammar (groups of all/any), the live count
  of an unsaved rule, a fault shown beside the builder row its JSON path names (or by its
  path for JSON), members a page at a time, entries and exits as traits change;
* automations: a definition's fault beside its box, the steps drawn as a flow with
  per-step counts that go up as a trigger runs, the automation's chart, activate, pause and
  kept versions;
* broadcasts: the form's refusals beside their field, scheduled and cancelled, started
  and sent to the whole audience with its progress, paused, resumed and cancelled.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from flux_testkit import audience
from flux_testkit.dashboard import DashboardClient, GFUser, create_user, signed_in
from flux_testkit.gfserver import GFProject, GFServer
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.storage.db import Database

pytestmark = pytest.mark.timeout(300)
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(auth=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def project(gf_module_server: GFServer, relay: SMTPTestServer) -> GFProject:
    made = gf_module_server.create_project(f"Engine pages {uuid.uuid4().hex[:6]}")
    gf_module_server.create_smtp_provider(made.id, "127.0.0.1", relay.port)
    return made


@pytest.fixture
def admin(gf_module_server: GFServer, project: GFProject) -> GFUser:
    return create_user(gf_module_server, "editor", workspace_id=project.workspace_id)


@pytest.fixture
def client(gf_module_server: GFServer, admin: GFUser) -> Iterator[DashboardClient]:
    opened = signed_in(gf_module_server, admin)
    try:
        yield opened
    finally:
        opened.close()


def template(server: GFServer, project: GFProject, name: str) -> str:
    made = server.client().post(
        f"/v1/projects/{project.id}/templates",
        json={"name": name, "subject": f"{name} for you", "text": "Hello {{ profile.email }}"},
    )
    assert made.status_code == 201, made.text
    template_id: str = made.json()["template"]["id"]
    return template_id


def identify(server: GFServer, project: GFProject, who: str, **traits: Any) -> None:
    answer = server.client(project.secret_key).post(
        "/v1/events", json={"type": "identify", "external_id": who, "traits": traits}
    )
    assert answer.status_code == 202, answer.text


def reader(n: int) -> str:
    return f"reader{n}@example.com"


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# -- segments ---------------------------------------------------------------------------------


def test_a_segment_is_built_counted_saved_and_followed(
    gf_module_server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    server = gf_module_server
    for who, plan in (("ann", "pro"), ("ben", "team"), ("cat", "free")):
        identify(server, project, who, plan=plan, email=f"{who}@example.com")
    base = f"/projects/{project.id}/segments"
    form = client.get(base + "/new")
    assert form.status_code == 200
    assert 'name="g0c0_kind"' in form.text
    # Group 1: plan is pro or team; that is the whole rule.
    rows = {"name": "Paying", "source": "builder", "match": "all", "g0_match": "any",
            "g0c0_kind": "trait", "g0c0_name": "plan", "g0c0_op": "eq", "g0c0_value": "pro",
            "g0c1_kind": "trait", "g0c1_name": "plan", "g0c1_op": "in",
            "g0c1_value": "team, enterprise"}  # fmt: skip
    expected = {
        "any": [
            {"trait": "plan", "op": "eq", "value": "pro"},
            {"trait": "plan", "op": "in", "value": ["team", "enterprise"]},
        ]
    }
    answer = eventually(
        lambda: (
            (a := client.post(base + "/preview", rows, headers=JSON).json())["count"] == 2 and a
        ),
        "the unsaved rule to count ann and ben",
    )
    assert answer["rule"] == expected
    # Without the script: the form posted to the preview shows the count in the page.
    shown = client.post(base + "/preview", rows)
    assert re.search(r'id="segment-count"[^>]*>2<', shown.text)
    # A second group: all of the groups (the first, and having been sent mail).
    two = {**rows, "g1_match": "all", "g1c0_kind": "email", "g1c0_activity": "sent",
           "g1c0_within": "P7D"}  # fmt: skip
    assert client.post(base + "/preview", two, headers=JSON).json() == {
        "count": 0,
        "rule": {"all": [expected, {"email": "sent", "within": "P7D"}]},
    }

    # A fault: shown beside the builder row it concerns, by its JSON path; the draft kept.
    bad = {**rows, "g0c1_kind": "event", "g0c1_name": "login", "g0c1_count": "many"}
    refused = client.post(base + "/new", bad)
    assert refused.status_code == 400
    fault = re.search(
        r'<p class="field-error" id="error-(g\d+c\d+)" data-field="([^"]+)"', refused.text
    )
    assert fault is not None, refused.text[-3000:]
    assert fault[1] == "g0c1"
    assert fault[2] == "rule.any[1].count.gte"
    assert 'value="many"' in refused.text
    assert client.post(base + "/preview", bad, headers=JSON).json()["field"] == (
        "rule.any[1].count.gte"
    )
    # And as JSON: the path is shown with the error.
    as_json = {"name": "Broken", "source": "json",
               "rule_json": '{"all": [{"trait": "plan", "op": "eq"}]}'}  # fmt: skip
    refused = client.post(base + "/new", as_json)
    assert refused.status_code == 400
    assert 'data-field="rule.all[0].value"' in refused.text
    not_json = client.post(base + "/new", {**as_json, "rule_json": "{nope"})
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.text
    nothing = client.post(base + "/new", {"name": "Empty", "source": "builder"})
    assert nothing.status_code == 400
    assert "add at least one condition" in nothing.text

    saved = client.post(base + "/new", rows)
    assert saved.status_code == 303, saved.text[:500]
    segment_url = saved.headers["location"].split("?")[0]
    segment_id = segment_url.rsplit("/", 1)[1]
    listed = eventually(
        lambda: (
            (page := client.get(base).text)
            and re.search(rf'data-segment="{segment_id}">.*?<td class="count">2</td>', page, re.S)
        ),
        "the segment's members to be counted",
    )
    assert listed
    page = client.get(segment_url).text
    assert page.count('<td class="move-entered">entered</td>') == 2
    assert page.count("<td>ann@example.com</td>") == 2  # a member, and her entry
    assert "<td>cat@example.com</td>" not in page
    # Members a page at a time.
    first = client.get(segment_url, params={"limit": "1"}).text
    more = re.search(r'href="(\?limit=1&amp;cursor=[^"]+)" rel="next"', first)
    assert more is not None
    second = client.get(segment_url + html.unescape(more[1])).text
    members = re.findall(r'<tr><td><a href="[^"]+/profiles/(prf_\w+)">', first + second)
    assert len(set(members)) == 2
    assert client.get(segment_url, params={"limit": "0"}).status_code == 400

    # The editor shows the saved rule in the builder, and saving a change keeps it.
    editor = client.get(segment_url + "/edit").text
    assert 'name="g0c0_value" value="pro"' in editor
    assert 'name="g0c1_value" value="[&#34;team&#34;, &#34;enterprise&#34;]"' in editor
    changed = client.post(segment_url, {**rows, "g0c1_value": '["team"]'})
    assert changed.status_code == 303
    # ben leaves when his plan changes: the exit is recorded.
    identify(server, project, "ben", plan="free")
    eventually(
        lambda: '<td class="move-left">left</td>' in client.get(segment_url).text,
        "ben's exit to be recorded",
    )
    rule = json.loads(
        html.unescape(
            re.search(r'<pre id="segment-rule">(.*?)</pre>', client.get(segment_url).text, re.S)[1]
        )
    )  # type: ignore[index]
    assert rule["any"][1] == {"trait": "plan", "op": "in", "value": ["team"]}
    assert client.post(segment_url + "/delete").status_code == 303
    assert client.get(segment_url).status_code == 404


# -- automations ------------------------------------------------------------------------------


def test_an_automation_is_defined_drawn_activated_and_counted(
    gf_module_server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    server = gf_module_server
    welcome = template(server, project, "welcome")
    thanks = template(server, project, "thanks")
    base = f"/projects/{project.id}/automations"
    assert client.get(base + "/new").status_code == 200
    steps = [
        {"id": "welcome", "type": "send_email", "template_id": welcome},
        {"id": "await-payment", "type": "wait_for_event", "event": "paid", "timeout": "P3D",
         "on_event": [{"id": "thanks", "type": "send_email", "template_id": thanks}],
         "on_timeout": [{"id": "give-up", "type": "exit"}]},
    ]  # fmt: skip
    form = {"name": "Order flow", "trigger": '{"event": "ordered"}', "steps": json.dumps(steps),
            "reentry": "", "exit_on": '{"event": "refunded"}', "quiet_hours": "",
            "frequency_cap": '{"max": 3, "per": "P1D"}'}  # fmt: skip

    # A fault is shown beside the box its path starts with, the draft kept.
    bad_steps = [dict(steps[0]), {"id": "pause", "type": "delay", "duration": "soon"}]
    refused = client.post(base + "/new", {**form, "steps": json.dumps(bad_steps)})
    assert refused.status_code == 400
    assert re.search(r'id="error-steps" data-field="steps\[1\]\.duration"', refused.text)
    assert "soon" in refused.text
    refused = client.post(base + "/new", {**form, "trigger": "{oops"})
    assert refused.status_code == 400
    assert 'id="error-trigger" data-field="trigger"' in refused.text
    unknown = [{**steps[0], "template_id": "tpl_nothere"}]
    refused = client.post(base + "/new", {**form, "steps": json.dumps(unknown)})
    assert 'data-field="steps[0].template_id"' in refused.text

    made = client.post(base + "/new", form)
    assert made.status_code == 303, made.text[:500]
    url = made.headers["location"].split("?")[0]
    page = client.get(url).text
    assert '<span id="automation-status" class="status status-draft">draft</span>' in page
    assert "When the event “ordered” is tracked" in text_of(page)
    for step_id in ("welcome", "await-payment", "thanks", "give-up"):
        assert f'data-step="{step_id}"' in page
    assert "Send the template welcome" in page
    assert "On “paid”" in page
    assert "On timeout (P3D)" in page
    assert page.count("<polyline") == 6
    settings = text_of(page.split('id="automation-settings"')[1].split("</dl>")[0])
    assert "Re-entry once" in " ".join(settings.split())
    assert "the event “refunded”" in settings
    assert "at most 3 per P1D" in settings

    assert client.post(url + "/activate").status_code == 303
    identify(server, project, "dana", email="dana@example.com")
    tracked = server.client(project.secret_key).post(
        "/v1/events", json={"event": "ordered", "external_id": "dana"}
    )
    assert tracked.status_code == 202, tracked.text

    def sent_count(step: str) -> int:
        found = re.search(
            rf'data-step="{step}".*?<li data-count="sent">sent <b>(\d+)</b>',
            client.get(url).text, re.S,
        )  # fmt: skip
        return int(found[1]) if found else 0

    eventually(lambda: sent_count("welcome") == 1, "the welcome step's send to be counted")
    page = client.get(url).text
    assert re.search(r'data-runs="running"><span class="muted">Runs running</span><b>1</b>', page)
    # The automation's chart counts its mail once the relay has it.
    eventually(
        lambda: re.search(
            r'data-series="sent"><span class="muted">Sends</span><b>1</b>', client.get(url).text
        ),
        "the automation's send in its chart",
    )
    log = client.get(f"/projects/{project.id}/messages", params={"to": "dana@example.com"})
    assert "dana@example.com" in log.text

    # A new version; both are kept and shown.
    changed = client.post(url, {**form, "name": "Order flow v2", "steps": json.dumps(steps[:1])})
    assert changed.status_code == 303
    page = client.get(url).text
    assert "Version 2 (current)" in page
    assert "Version 1" in page
    # The step the run waits at is no longer drawn; its counts are kept under earlier steps.
    assert 'id="step-await-payment"' not in page
    assert '<li data-step="await-payment">await-payment: entered <b>1</b>' in page
    assert client.post(url + "/pause").status_code == 303
    assert "status-paused" in client.get(url).text
    listed = client.get(base).text
    assert "Order flow v2" in listed
    assert "paused" in listed
    assert client.get(url, params={"days": "5"}).status_code == 400


# -- broadcasts -------------------------------------------------------------------------------


def test_a_broadcast_is_created_scheduled_sent_paused_and_cancelled(
    gf_module_server: GFServer, project: GFProject, client: DashboardClient, relay: SMTPTestServer
) -> None:
    server = gf_module_server
    news = template(server, project, "news")
    db = Database(server.database.sqlalchemy_url)
    try:
        group = audience.add_segment(
            db, project.id, 2, name="Readers", traits_for=lambda n: {"email": reader(n)}
        )
    finally:
        db.dispose()
    base = f"/projects/{project.id}/broadcasts"
    form_page = client.get(base + "/new").text
    assert f'<option value="{news}"' in form_page
    assert "Readers (2 members now)" in form_page
    form = {"name": "March news", "template_id": news, "segment_id": group.segment_id,
            "when": "now", "send_at": "", "rate_per_minute": "", "then": "start"}  # fmt: skip

    for fields, name in (
        ({"rate_per_minute": "0"}, "rate_per_minute"),
        ({"when": "later", "send_at": "next tuesday"}, "send_at"),
        ({"template_id": "tpl_nothere"}, "template_id"),
        ({"name": ""}, "name"),
    ):
        refused = client.post(base + "/new", {**form, **fields})
        assert refused.status_code == 400, (fields, refused.status_code)
        assert f'<p class="field-error" id="error-{name}"' in refused.text, fields

    # Scheduled for later, then cancelled: nothing is sent.
    later = client.post(base + "/new", {**form, "when": "later", "send_at": "2099-01-01T09:00"})
    assert later.status_code == 303
    later_url = later.headers["location"].split("?")[0]
    page = client.get(later_url).text
    assert '<span id="broadcast-status" class="status status-scheduled">scheduled</span>' in page
    assert "2099-01-01 09:00:00 UTC" in page
    assert client.post(later_url + "/cancel").status_code == 303
    assert "status-cancelled" in client.get(later_url).text
    assert client.post(later_url + "/resume").status_code == 409

    # Sent now: the whole audience, with its progress.
    draft = client.post(base + "/new", {**form, "name": "April news", "then": "draft"})
    url = draft.headers["location"].split("?")[0]
    assert "status-draft" in client.get(url).text
    assert client.post(url + "/start").status_code == 303
    page = eventually(
        lambda: "status-sent" in (p := client.get(url).text) and p, "the broadcast to be sent"
    )
    assert '<progress id="progress" class="bar" max="2" value="2">' in page
    assert re.search(r'data-count="sent"><span class="muted">Sent</span><b>2</b>', page)
    assert {r.rcpt_tos[0] for r in relay.messages if "reader" in r.rcpt_tos[0]} >= {
        reader(0), reader(1)}  # fmt: skip

    # Slow (one a minute): paused, resumed and cancelled while it sends.
    slow = client.post(base + "/new", {**form, "name": "Slow news", "rate_per_minute": "1"})
    slow_url = slow.headers["location"].split("?")[0]
    assert "status-sending" in client.get(slow_url).text
    assert client.post(slow_url + "/pause").status_code == 303
    assert "status-paused" in client.get(slow_url).text
    assert client.post(slow_url + "/resume").status_code == 303
    assert client.post(slow_url + "/cancel").status_code == 303
    card = r'data-count="(\w+)"><span[^>]*>[^<]*</span><b>(\d+)'

    def shown() -> dict[str, int]:
        return {k: int(n) for k, n in re.findall(card, client.get(slow_url).text)}

    assert "status-cancelled" in client.get(slow_url).text
    # A message a worker was handing to the relay at that moment still finishes; then
    # nothing is pending and every member is counted once.
    settled = eventually(lambda: (c := shown())["pending"] == 0 and c, "the cancel to settle")
    assert settled["targeted"] == 2
    assert sum(n for k, n in settled.items() if k != "targeted") == 2, settled
    assert settled["cancelled"] + settled["sent"] == 2, settled
    assert "April news" in client.get(base).text
