"""The dashboard's guarantees, over HTTP against the real server on SQLite and PostgreSQL:

* every page route (all of ``web.routing.PAGES``) shows a user their own workspace's data and
  never another's: another workspace's ids are ``not_found`` like ids that do not exist, and
  pages without ids show none of the other workspace's objects;
* a viewer can change nothing (every POST route is refused server-side, with a form that would
  otherwise have worked, and the database is unchanged); an editor cannot do what needs admin;
* a form post without the session's CSRF token (or from another origin) is refused, and so is a
  sign-in form that did not come from the server;
* sign-in is throttled; signed-out requests are sent to /login; sign-out ends the session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flux_testkit.dashboard import DashboardClient, GFUser, create_user, signed_in
from flux_testkit.gfserver import GFServer
from flux_testkit.smtpd import SMTPTestServer
from flux_testkit.waiting import eventually
from getfluxly_server.web.routing import PAGES

# The module's world (two workspaces with a project, provider, template, profile, message and
# users each) is made once by the first test; on a busy machine that alone takes a minute.
pytestmark = pytest.mark.timeout(300)


@dataclass
class Tenant:
    """One workspace's objects, each with a name no other tenant's pages may show."""

    label: str
    workspace_id: str
    workspace_key: str
    ids: dict[str, str]
    markers: list[str]
    admin: GFUser
    editor: GFUser | None = None
    viewer: GFUser | None = None


def _tenant(
    server: GFServer, relay: SMTPTestServer, label: str, key: str, workspace_id: str
) -> Tenant:
    api = server.client(key)
    project = server.create_project(f"Project-{label}", key=key)
    provider = server.create_smtp_provider(
        project.id, "127.0.0.1", relay.port, display_name=f"Relay-{label}", key=key
    )
    template = api.post(
        f"/v1/projects/{project.id}/templates",
        json={"name": f"template-{label}", "subject": f"Subject-{label}", "html": "<p>hi</p>"},
    )
    assert template.status_code == 201, template.text
    suppressed = f"suppressed-{label.lower()}@example.com"
    assert api.post(
        f"/v1/projects/{project.id}/suppressions", json={"email": suppressed}
    ).status_code in (200, 201)
    issued = api.post(
        f"/v1/projects/{project.id}/keys", json={"kind": "secret", "name": f"key-{label}"}
    )
    assert issued.status_code == 201, issued.text
    ingest = server.client(project.secret_key)
    email = f"person-{label.lower()}@example.com"
    posted = ingest.post(
        "/v1/events",
        json={"type": "identify", "external_id": f"user-{label}", "traits": {"email": email}},
    )
    assert posted.status_code == 202, posted.text
    profile = eventually(
        lambda: api.get(
            f"/v1/projects/{project.id}/profiles", params={"identity": f"user-{label}"}
        ).json()["profiles"],
        "the profile",
    )[0]
    sent = ingest.post(
        "/v1/messages", json={"to": email, "subject": f"Mail-{label}", "text": "hello"}
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]
    # The settings of the feedback loop: an outbound endpoint, a relay's secret, a group.
    endpoint = api.post(
        f"/v1/projects/{project.id}/webhooks",
        json={
            "url": f"https://hooks-{label.lower()}.example.com/in",
            "events": ["message.bounced"],
        },
    )
    assert endpoint.status_code == 201, endpoint.text
    secret = api.post(
        f"/v1/projects/{project.id}/webhook-secrets",
        json={"relay": "mailgun", "secret": f"key-{label}-mailgun-signing"},
    )
    assert secret.status_code == 201, secret.text
    groups = api.put(
        f"/v1/projects/{project.id}/subscription-groups",
        json={
            "subscription_groups": [{"name": f"group-{label.lower()}", "label": f"Group-{label}"}]
        },
    )
    assert groups.status_code == 200, groups.text
    # Sent before the tests compare the database before and after their refused posts.
    eventually(
        lambda: api.get(f"/v1/messages/{message_id}").json()["message"]["status"] == "sent",
        "the message to be sent",
    )
    engine = _engine_objects(api, project.id, label, template.json()["template"]["id"])
    made = Tenant(
        label,
        workspace_id,
        key,
        ids={
            "project_id": project.id,
            "provider_id": provider["id"],
            "template_id": template.json()["template"]["id"],
            "profile_id": profile["id"],
            "message_id": sent.json()["message"]["id"],
            "key_id": issued.json()["key"]["id"],
            "webhook_id": endpoint.json()["webhook"]["id"],
            **engine,
        },
        markers=[f"Project-{label}", f"Relay-{label}", f"template-{label}", suppressed, email,
                 issued.json()["key"]["hint"], f"hooks-{label.lower()}.example.com",
                 f"Group-{label}", f"segment-{label}", f"automation-{label}",
                 f"broadcast-{label}"],
        admin=create_user(server, "admin", workspace_id=workspace_id),
    )  # fmt: skip
    made.markers.append(made.admin.email)  # the Users page lists the workspace's own only
    return made


def _engine_objects(api: Any, project_id: str, label: str, template_id: str) -> dict[str, str]:
    """A segment, a draft automation and a draft broadcast of the project (nothing sent)."""
    segment = api.post(
        f"/v1/projects/{project_id}/segments",
        json={"name": f"segment-{label}", "rule": {"trait": "email", "op": "exists"}},
    )
    assert segment.status_code == 201, segment.text
    segment_id = segment.json()["segment"]["id"]
    automation = api.post(
        f"/v1/projects/{project_id}/automations",
        json={"name": f"automation-{label}", "trigger": {"event": f"never-{label}"},
              "steps": [{"id": "hello", "type": "send_email", "template_id": template_id}]},
    )  # fmt: skip
    assert automation.status_code == 201, automation.text
    broadcast = api.post(
        f"/v1/projects/{project_id}/broadcasts",
        json={"name": f"broadcast-{label}", "template_id": template_id, "segment_id": segment_id},
    )
    assert broadcast.status_code == 201, broadcast.text
    return {
        "segment_id": segment_id,
        "automation_id": automation.json()["automation"]["id"],
        "broadcast_id": broadcast.json()["broadcast"]["id"],
    }


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(auth=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tenants(gf_module_server: GFServer, relay: SMTPTestServer) -> tuple[Tenant, Tenant]:
    server = gf_module_server
    other = server.create_workspace("Workspace B")
    a = _tenant(server, relay, "A", server.workspace_key, server.workspace_id)
    b = _tenant(server, relay, "B", other.key, other.id)
    a.editor = create_user(server, "editor", workspace_id=a.workspace_id)
    a.viewer = create_user(server, "viewer", workspace_id=a.workspace_id)
    return a, b


def url(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m[1]], path)


def counts(server: GFServer) -> dict[str, Any]:
    """What a refused action must leave as it was."""
    one = server.database.query
    return {
        table: one(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]  # noqa: S608 - fixed names
        for table in ("projects", "templates", "suppressions", "email_providers", "api_keys",
                      "messages", "users", "webhook_secrets", "outbound_webhooks",
                      "subscription_groups")
    } | {
        "revoked": one("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NOT NULL")[0]["n"],
        "versions": one("SELECT SUM(version) AS n FROM templates")[0]["n"],
        "statuses": sorted(r["status"] for r in one("SELECT status FROM messages")),
        "defaults": sorted(
            str(r["d"]) for r in one("SELECT default_provider_id AS d FROM projects")
        ),
    } | {
        table: sorted(tuple(map(str, r.values())) for r in one(f"SELECT {columns} FROM {table}"))  # noqa: S608
        for table, columns in (
            ("segments", "id, name, version, deleted_at"),
            ("automations", "id, name, status, version, deleted_at"),
            ("broadcasts", "id, name, status"),
        )
    }  # fmt: skip


def form_for(page_path: str, tenant: Tenant, relay: SMTPTestServer) -> dict[str, str]:
    """Fields that would make the action work for a user allowed to do it."""
    if page_path.endswith("/settings/providers/new"):
        return {"provider": "smtp", "display_name": "Sneaky", "from_email": "x@example.com",
                "smtp_host": "127.0.0.1", "smtp_port": str(relay.port), "smtp_secure": "none",
                "username": "user", "password": "password"}  # fmt: skip
    if page_path.endswith("/templates/new") or page_path.endswith("/templates/{template_id}"):
        return {"name": "sneaky", "subject": "Sneaky", "html": "<p>sneaky</p>", "kind": "marketing"}
    if page_path.endswith("/suppressions/add"):
        return {"email": "sneaky@example.com"}
    if page_path.endswith("/suppressions/remove"):
        return {"email": f"suppressed-{tenant.label.lower()}@example.com"}
    if page_path.endswith("/test"):
        return {"to": "sneaky@example.com"}
    if page_path == "/settings/keys":
        return {"kind": "secret", "project_id": tenant.ids["project_id"], "name": "sneaky"}
    if page_path == "/settings/projects":
        return {"name": "Sneaky project"}
    if page_path.endswith("/settings/webhooks"):
        return {"relay": "smtp"}
    if page_path.endswith("/settings/webhooks/remove"):
        return {"relay": "mailgun"}
    if page_path.endswith("/settings/outbound-webhooks"):
        return {"url": "https://sneaky.example.com/in", "event.message.bounced": "1"}
    if page_path.endswith("/settings/subscription-groups"):
        return {"name": "sneaky", "label": "Sneaky"}
    if page_path.endswith("/settings/subscription-groups/remove"):
        return {"name": f"group-{tenant.label.lower()}"}
    if "/segments/" in page_path and not page_path.endswith("/delete"):
        return {"name": "sneaky", "source": "json", "rule_json": '{"trait": "a", "op": "exists"}'}
    if page_path.endswith("/automations/new") or page_path.endswith("/{automation_id}"):
        return {"name": "sneaky", "trigger": '{"event": "sneaky"}',
                "steps": '[{"id": "out", "type": "exit"}]'}  # fmt: skip
    if page_path.endswith("/broadcasts/new"):
        return {"name": "sneaky", "template_id": tenant.ids["template_id"],
                "segment_id": tenant.ids["segment_id"], "then": "start"}  # fmt: skip
    return {}


def test_the_pages_are_all_covered_here() -> None:
    """A page added later is checked below like the others (ids named as these tests know)."""
    known = {"project_id", "provider_id", "template_id", "profile_id", "message_id", "key_id"}
    known |= {"webhook_id"}
    known |= {"segment_id", "automation_id", "broadcast_id"}
    for info in PAGES:
        assert set(re.findall(r"\{(\w+)\}", info.path)) <= known, info.path
    assert {p.method for p in PAGES} == {"GET", "POST"}
    assert len([p for p in PAGES if p.method == "POST" and p.need != "view"]) >= 14


def test_a_user_sees_only_their_workspaces_data_on_every_page(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    as_a, as_b = signed_in(gf_module_server, a.admin), signed_in(gf_module_server, b.admin)
    try:
        for info in (p for p in PAGES if p.method == "GET"):
            own = as_a.get(url(info.path, a.ids))
            if info.path == "/dev/inbox":
                assert own.status_code == 404  # not in dev mode
            else:
                assert own.status_code in (200, 303), (info.path, own.status_code, own.text[:300])
            for marker in b.markers:
                assert marker not in own.text, (info.path, marker)
            foreign = as_b.get(url(info.path, a.ids))
            if "{" in info.path:
                assert foreign.status_code == 404, (info.path, foreign.status_code)
                assert 'data-code="not_found"' in foreign.text
            for marker in a.markers:
                assert marker not in foreign.text, (info.path, marker)
        # Mixing ids: B's project with A's objects is still not found.
        mixed = {**a.ids, "project_id": b.ids["project_id"]}
        for info in (p for p in PAGES if p.method == "GET" and "{project_id}/" in p.path):
            if re.search(r"\{(?!project_id)\w+\}", info.path):
                assert as_b.get(url(info.path, mixed)).status_code == 404, info.path
        # And what A's own pages show is A's.
        page = as_a.get(url("/projects/{project_id}/templates", a.ids)).text
        assert "template-A" in page
        assert (
            "suppressed-a@example.com"
            in as_a.get(url("/projects/{project_id}/suppressions", a.ids)).text
        )
        assert (
            "person-a@example.com"
            in as_a.get(url("/projects/{project_id}/profiles/{profile_id}", a.ids)).text
        )
    finally:
        as_a.close()
        as_b.close()


def test_no_post_of_one_workspace_reaches_another(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant], relay: SMTPTestServer
) -> None:
    a, b = tenants
    as_b = signed_in(gf_module_server, b.admin)
    try:
        before = counts(gf_module_server)
        for info in (p for p in PAGES if p.method == "POST" and "{" in p.path):
            answer = as_b.post(url(info.path, a.ids), form_for(info.path, a, relay))
            assert answer.status_code == 404, (info.path, answer.status_code, answer.text[:300])
        assert counts(gf_module_server) == before
    finally:
        as_b.close()


def test_a_viewer_can_change_nothing(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant], relay: SMTPTestServer
) -> None:
    a, _ = tenants
    assert a.viewer is not None
    viewer = signed_in(gf_module_server, a.viewer)
    try:
        before = counts(gf_module_server)
        refused = 0
        for info in (p for p in PAGES if p.method == "POST" and p.need != "view"):
            answer = viewer.post(url(info.path, a.ids), form_for(info.path, a, relay))
            assert answer.status_code == 403, (info.path, answer.status_code, answer.text[:300])
            assert 'data-code="forbidden"' in answer.text
            refused += 1
        assert refused >= 14
        assert counts(gf_module_server) == before
        # The pages show a viewer no forms that change things.
        for path in (
            "/projects/{project_id}/suppressions",
            "/projects/{project_id}/settings/providers",
            "/settings/keys",
            "/settings/projects",
            "/projects/{project_id}/settings/webhooks",
            "/projects/{project_id}/settings/outbound-webhooks",
            "/projects/{project_id}/settings/subscription-groups",
            "/projects/{project_id}/segments",
            "/projects/{project_id}/automations",
            "/projects/{project_id}/broadcasts",
            "/projects/{project_id}/broadcasts/{broadcast_id}",
        ):
            shown = viewer.get(url(path, a.ids)).text
            assert shown.count('method="post"') == 1, path  # sign-out only
    finally:
        viewer.close()


def test_an_editor_changes_content_but_not_settings(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant], relay: SMTPTestServer
) -> None:
    a, _ = tenants
    assert a.editor is not None
    editor = signed_in(gf_module_server, a.editor)
    try:
        before = counts(gf_module_server)
        for info in (p for p in PAGES if p.method == "POST" and p.need == "admin"):
            answer = editor.post(url(info.path, a.ids), form_for(info.path, a, relay))
            assert answer.status_code == 403, info.path
        assert counts(gf_module_server) == before
        added = editor.post(
            url("/projects/{project_id}/suppressions/add", a.ids),
            {"email": "editor-added@example.com"},
        )
        assert added.status_code == 303, added.text[:300]
        assert (
            "editor-added@example.com"
            in editor.get(url("/projects/{project_id}/suppressions", a.ids)).text
        )
    finally:
        editor.close()


def test_a_post_without_the_sessions_csrf_token_is_refused(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    admin = signed_in(gf_module_server, a.admin)
    try:
        path = url("/projects/{project_id}/suppressions/add", a.ids)
        before = counts(gf_module_server)
        for fields, headers in (
            ({"email": "csrf@example.com"}, {}),  # no token
            ({"email": "csrf@example.com", "csrf_token": "forged"}, {}),
            (
                {"email": "csrf@example.com", "csrf_token": admin.csrf},
                {"Origin": "http://evil.test"},
            ),
        ):
            answer = admin.post(path, fields, csrf=False, headers=headers)
            assert answer.status_code == 403, answer.text[:300]
            assert 'data-code="csrf_failed"' in answer.text
        # Another session's token is not this session's.
        other = signed_in(gf_module_server, a.admin)
        try:
            answer = admin.post(
                path, {"email": "csrf@example.com", "csrf_token": other.csrf}, csrf=False
            )
            assert answer.status_code == 403
        finally:
            other.close()
        assert counts(gf_module_server) == before
        assert admin.post(path, {"email": "csrf@example.com"}).status_code == 303
        # The sign-in form: its token must match the cookie set with it.
        stranger = DashboardClient(gf_module_server)
        try:
            forged = stranger.http.post(
                "/login",
                data={"email": a.admin.email, "password": a.admin.password, "csrf_token": "x"},
            )
            assert forged.status_code == 403
            assert "gf_session" not in forged.cookies
        finally:
            stranger.close()
    finally:
        admin.close()


def test_signed_out_requests_go_to_sign_in_and_sign_out_ends_the_session(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    anonymous = DashboardClient(gf_module_server)
    admin = DashboardClient(gf_module_server)
    try:
        for info in (p for p in PAGES if p.method == "GET"):
            answer = anonymous.get(url(info.path, a.ids))
            assert answer.status_code == 303, info.path
            assert answer.headers["location"].startswith("/login?next=")
        refused = anonymous.post(
            url("/projects/{project_id}/suppressions/add", a.ids), {"email": "x@example.com"}
        )
        assert refused.status_code == 401
        signed = admin.sign_in(a.admin.email, a.admin.password)
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "gf_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie.replace("Lax", "lax")
        assert a.admin.password not in signed.text
        assert admin.get("/settings/projects").status_code == 200
        assert admin.post("/logout").status_code == 303
        assert admin.get("/settings/projects").status_code == 303
        # The old cookie, replayed, is dead too (the session is gone from the database).
        replay = DashboardClient(gf_module_server)
        try:
            replay.http.cookies.set("gf_session", signed.cookies["gf_session"])
            assert replay.get("/settings/projects").status_code == 303
        finally:
            replay.close()
        # "next" never leaves the server.
        again = admin.http.get("/login")
        from flux_testkit.dashboard import csrf_token

        answer = admin.http.post("/login", data={
            "email": a.admin.email, "password": a.admin.password,
            "csrf_token": csrf_token(again.text), "next": "//evil.test/x"})  # fmt: skip
        assert answer.headers["location"] == "/"
    finally:
        anonymous.close()
        admin.close()


def test_sign_in_is_throttled_per_account(
    gf_module_server: GFServer, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    target = create_user(gf_module_server, "viewer", workspace_id=a.workspace_id)
    client = DashboardClient(gf_module_server)
    try:
        for _ in range(5):
            wrong = client.sign_in(target.email, "not the password")
            assert wrong.status_code == 401
            assert "Wrong email or password" in wrong.text
        throttled = client.sign_in(target.email, target.password)
        assert throttled.status_code == 429
        assert "Too many failed sign-ins" in throttled.text
        assert int(throttled.headers["retry-after"]) > 0
        assert "gf_session" not in throttled.cookies
        # Other accounts from this address still get in.
        admin = signed_in(gf_module_server, a.admin)
        assert admin.get("/settings/projects").status_code == 200
        admin.close()
    finally:
        client.close()
