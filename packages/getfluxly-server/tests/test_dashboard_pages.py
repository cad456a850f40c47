"""What the dashboard's pages do, over HTTP against the real server on SQLite and PostgreSQL:
the overview's counts per day (sends from the ledger, feedback from ``message_events``,
machine opens left out), Add provider's refusals shown beside their field with the advice,
the native connectors' forms, keys and projects shown once, a template's refusal naming its
field, a failed message retried from its page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from flux_testkit.dashboard import DashboardClient, GFUser, create_user, signed_in
from flux_testkit.gfserver import GFProject, GFServer, free_port
from flux_testkit.smtpd import DEFAULT_USERS, Faults, SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.domain import providers

pytestmark = pytest.mark.timeout(300)
REFUSED = "nobody@example.com"


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(
        auth=True, faults=Faults(refuse_recipients={REFUSED: (550, "5.1.1 No such user")})
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project(gf_module_server: GFServer, relay: SMTPTestServer) -> GFProject:
    made = gf_module_server.create_project("Pages project")
    gf_module_server.create_smtp_provider(made.id, "127.0.0.1", relay.port)
    return made


@pytest.fixture(scope="module")
def admin(gf_module_server: GFServer, project: GFProject) -> GFUser:
    return create_user(gf_module_server, "admin", workspace_id=project.workspace_id)


@pytest.fixture
def client(gf_module_server: GFServer, admin: GFUser) -> Iterator[DashboardClient]:
    opened = signed_in(gf_module_server, admin)
    try:
        yield opened
    finally:
        opened.close()


def send(server: GFServer, project: GFProject, to: str) -> str:
    answer = server.client(project.secret_key).post(
        "/v1/messages", json={"to": to, "subject": "Hello", "text": "hi"}
    )
    assert answer.status_code == 202, answer.text
    message_id: str = answer.json()["message"]["id"]
    return message_id


def status_of(server: GFServer, message_id: str) -> str:
    status: str = server.client().get(f"/v1/messages/{message_id}").json()["message"]["status"]
    return status


def cards(html: str) -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(
            r'data-series="(\w+)"><span class="muted">[^<]*</span><b>(\d+)</b>', html
        )
    }


def test_the_overview_counts_the_projects_mail_per_day(
    gf_module_server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    server = gf_module_server
    before = cards(client.get(f"/projects/{project.id}").text)
    assert set(before) == {"sent", "delivered", "bounced", "complained", "opened", "clicked"}
    sent = [send(server, project, f"reader{n}@example.com") for n in range(3)]
    eventually(lambda: all(status_of(server, m) == "sent" for m in sent), "three sends")
    now = datetime.now(UTC)
    rows = [
        ("delivered", False, sent[0]), ("delivered", False, sent[1]), ("opened", False, sent[0]),
        ("opened", True, sent[1]),  # a privacy proxy's fetch: not a person's open
        ("clicked", False, sent[0]), ("bounced", False, sent[2]), ("complained", False, sent[1]),
    ]  # fmt: skip
    for n, (kind, machine, message_id) in enumerate(rows):
        server.database.execute(
            "INSERT INTO message_events (project_id, message_id, email, type, machine, source, "
            "provider_event_id, occurred_at, recorded_at) VALUES (:project, :message, :email, "
            ":type, :machine, 'smtp', :event, :at, :at)",
            project=project.id, message=message_id, email="reader@example.com", type=kind,
            machine=machine, event=f"evt-{n}", at=now,
        )  # fmt: skip
    page = client.get(f"/projects/{project.id}")
    assert page.status_code == 200
    after = cards(page.text)
    assert {k: after[k] - before[k] for k in after} == {
        "sent": 3, "delivered": 2, "bounced": 1, "complained": 1, "opened": 1, "clicked": 1,
    }  # fmt: skip
    # Today's row of the table holds them, and the chart draws six series.
    today = now.date().isoformat()
    row = re.search(rf"<th scope=\"row\">{today}</th>((?:<td>\d+</td>)+)", page.text)
    assert row is not None
    sends, delivered, bounced, complained, opened, clicked = map(int, re.findall(r"\d+", row[1]))
    assert sends >= 3
    assert min(delivered, bounced, complained, opened, clicked) >= 1
    assert page.text.count("<polyline") == 6
    assert client.get(f"/projects/{project.id}?days=7").status_code == 200
    refused = client.get(f"/projects/{project.id}?days=1000")
    assert refused.status_code == 400
    assert "days must be one of" in refused.text


def test_add_provider_shows_each_refusal_beside_its_field(
    client: DashboardClient, project: GFProject, relay: SMTPTestServer
) -> None:
    [(user, password)] = DEFAULT_USERS.items()
    path = f"/projects/{project.id}/settings/providers/new?kind=smtp"
    form = {"provider": "smtp", "display_name": "Form relay", "from_email": "hi@example.com",
            "smtp_host": "127.0.0.1", "smtp_port": str(relay.port), "smtp_secure": "none",
            "username": user, "password": password}  # fmt: skip

    def error_of(fields: dict[str, str]) -> tuple[str, str]:
        answer = client.post(path, {**form, **fields})
        assert answer.status_code == 422, answer.text[:300]
        found = re.search(
            r'<div class="field-error" id="error-(\w+)"[^>]*data-code="(\w+)"', answer.text
        )
        assert found is not None, answer.text[-2000:]
        assert password not in answer.text
        return found[1], found[2]

    assert error_of({"password": "wrong"}) == ("password", "auth_failed")
    assert error_of({"smtp_port": str(free_port())}) == ("smtp_host", "connection_refused")
    assert error_of({"smtp_port": "70000"}) == ("smtp_port", "validation_error")
    assert error_of({"from_email": "not an address"}) == ("from_email", "validation_error")
    advice = client.post(path, {**form, "password": "wrong"}).text
    assert "app password" in advice
    saved = client.post(path, form)
    assert saved.status_code == 303
    listed = client.get(f"/projects/{project.id}/settings/providers").text
    assert "Form relay" in listed
    assert password not in listed


@pytest.mark.parametrize("kind", sorted(providers.KINDS))
def test_each_connector_has_its_form(
    client: DashboardClient, project: GFProject, kind: str
) -> None:
    page = client.get(f"/projects/{project.id}/settings/providers/new?kind={kind}")
    assert page.status_code == 200
    for spec in providers.KINDS[kind].fields:
        assert f'name="{spec.name}"' in page.text, (kind, spec.name)
        if spec.secret:
            assert re.search(rf'name="{spec.name}" type="password"', page.text)
    for common in ("display_name", "from_email", "from_name", "reply_to"):
        assert f'name="{common}"' in page.text
    assert (
        client.get(f"/projects/{project.id}/settings/providers/new?kind=pigeon").status_code == 400
    )


def test_keys_and_projects_are_shown_once(
    gf_module_server: GFServer, client: DashboardClient, project: GFProject
) -> None:
    made = client.post(
        "/settings/keys", {"kind": "secret", "project_id": project.id, "name": "web"}
    )
    assert made.status_code == 201
    [key] = re.findall(r'<code data-kind="secret">(gflux_secret_\w+)</code>', made.text)
    assert (
        gf_module_server.client(key)
        .post("/v1/events", json={"event": "key_checked", "anonymous_id": "a"})
        .status_code
        == 202
    )
    listing = client.get("/settings/keys").text
    assert key not in listing
    assert key[:17] in listing  # its visible start
    key_id = re.search(rf'<tr data-key="(\w+)"><td><code>{key[:17]}', listing)
    assert key_id is not None
    assert client.post(f"/settings/keys/{key_id[1]}/revoke").status_code == 303
    assert (
        gf_module_server.client(key)
        .post("/v1/events", json={"event": "key_checked", "anonymous_id": "a"})
        .status_code
        == 401
    )

    created = client.post("/settings/projects", {"name": "Made on the web"})
    assert created.status_code == 201
    assert re.search(r'data-kind="publishable">gflux_pub_\w+<', created.text)
    assert "Made on the web" in client.get("/settings/projects").text
    refused = client.post("/settings/projects", {"name": ""})
    assert refused.status_code == 400


def test_a_template_refusal_names_its_field_and_keeps_the_draft(
    client: DashboardClient, project: GFProject
) -> None:
    answer = client.post(
        f"/projects/{project.id}/templates/new",
        {"name": "broken", "subject": "Hi", "html": "<p>{{ profile.name </p>", "kind": "marketing"},
    )
    assert answer.status_code == 400
    assert 'data-field="html"' in answer.text
    assert "{{ profile.name </p>" in answer.text.replace("&lt;", "<").replace("&gt;", ">")
    preview = client.post(
        f"/projects/{project.id}/templates/preview",
        {"subject": "Hi {{ profile.first_name }}", "html": "<b>{{ data.x }}</b>",
         "sample_traits": '{"first_name": "Grace"}', "sample_data": '{"x": "<i>"}'},
    )  # fmt: skip
    assert preview.status_code == 200
    body = preview.json()
    assert body["subject"] == "Hi Grace"
    assert body["html"] == "<b>&lt;i&gt;</b>"  # data is escaped in HTML, as a send escapes it
    bad = client.post(
        f"/projects/{project.id}/templates/preview",
        {"subject": "x", "html": "y", "sample_data": "[1]"},
    )
    assert bad.json()["error"] == "sample_data must be a JSON object"


def test_a_failed_message_is_retried_from_its_page(
    gf_module_server: GFServer, client: DashboardClient, project: GFProject
) -> None:
    message_id = send(gf_module_server, project, REFUSED)
    eventually(lambda: status_of(gf_module_server, message_id) == "failed", "the message to fail")
    page = client.get(f"/projects/{project.id}/messages/{message_id}")
    assert "Retry" in page.text
    assert "5.1.1 No such user" in page.text
    listed = client.get(f"/projects/{project.id}/messages", params={"status": "failed"}).text
    assert message_id in listed
    retried = client.post(f"/projects/{project.id}/messages/{message_id}/retry")
    assert retried.status_code == 303
    history = (
        gf_module_server.client().get(f"/v1/messages/{message_id}").json()["message"]["history"]
    )
    assert any((h["detail"] or "").startswith("retried by hand: by ") for h in history)
    again = client.post(f"/projects/{project.id}/messages/{message_id}/retry")
    assert again.status_code in (303, 409)  # 409 not_retryable while it is queued again
