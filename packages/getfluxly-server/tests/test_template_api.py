"""The template API through the real server, on SQLite and on PostgreSQL (engine spec
section 1): create, list, read, change, delete and preview a project's templates.

Contract: ``POST /v1/projects/{project_id}/templates`` ``{"name", "subject", "html"?,
"text"?, "mjml"?, "kind"?}`` → 201 ``{"template": {...}}``; a Liquid error is 400
``validation_error`` naming the field and line; a live name is unique in its project (409
``template_name_taken``), a deleted template frees it. ``GET|PATCH|DELETE
/v1/templates/{id}`` and the list (newest first, cursor paging). ``POST
/v1/templates/{id}/preview`` renders as a send would and lists undefined variables; includes
reach only the same project's live templates; the sandbox's limits answer 400 and the
server goes on. Another workspace's ids are 404 exactly as a missing id is.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, expect_error


@pytest.fixture
def server(gf_module_server: GFServer) -> GFServer:
    return gf_module_server


@pytest.fixture
def project(server: GFServer) -> GFProject:
    return server.create_project("Templates")


def _create(server: GFServer, project_id: str, key: str | None = None, **body: Any) -> Any:
    return server.client(key).post(f"/v1/projects/{project_id}/templates", json=body)


def _made(server: GFServer, project_id: str, **body: Any) -> dict[str, Any]:
    response = _create(server, project_id, **body)
    assert response.status_code == 201, response.text
    template: dict[str, Any] = response.json()["template"]
    return template


def _preview(server: GFServer, template_id: str, **body: Any) -> httpx.Response:
    return server.client().post(f"/v1/templates/{template_id}/preview", json=body)


def _previewed(server: GFServer, template_id: str, **body: Any) -> dict[str, Any]:
    response = _preview(server, template_id, **body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _names(server: GFServer, project_id: str) -> list[str]:
    response = server.client().get(f"/v1/projects/{project_id}/templates")
    assert response.status_code == 200, response.text
    return [t["name"] for t in response.json()["templates"]]


# Create, read, change, delete.


def test_a_template_is_created_read_changed_and_deleted(
    server: GFServer, project: GFProject
) -> None:
    owner = server.client()
    made = _made(
        server, project.id, name="welcome", kind="transactional",
        subject="Welcome {{ profile.first_name }}", html="<p>Hi {{ profile.first_name }}</p>",
    )  # fmt: skip
    assert made["id"].startswith("tpl_")
    assert made == {
        "id": made["id"], "project_id": project.id, "name": "welcome", "kind": "transactional",
        "subject": "Welcome {{ profile.first_name }}", "html": "<p>Hi {{ profile.first_name }}</p>",
        "text": None, "mjml": None, "version": 1, "created_at": made["created_at"],
        "updated_at": made["created_at"],
    }  # fmt: skip
    assert made["created_at"].endswith("Z")

    assert owner.get(f"/v1/templates/{made['id']}").json() == {"template": made}
    listed = owner.get(f"/v1/projects/{project.id}/templates").json()
    assert listed == {"templates": [made], "next_cursor": None}

    changed = owner.patch(f"/v1/templates/{made['id']}", json={"subject": "Hello"})
    assert changed.status_code == 200, changed.text
    after = changed.json()["template"]
    assert (after["subject"], after["version"], after["html"]) == ("Hello", 2, made["html"])
    assert after["updated_at"] > made["updated_at"]
    assert after["created_at"] == made["created_at"]
    # A change that changes nothing is no new version.
    same = owner.patch(f"/v1/templates/{made['id']}", json={"subject": "Hello"}).json()
    assert same["template"] == after

    deleted = owner.delete(f"/v1/templates/{made['id']}")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True, "id": made["id"]})
    for method in ("GET", "PATCH", "DELETE"):
        body = {"subject": "x"} if method == "PATCH" else None
        gone = owner.request(method, f"/v1/templates/{made['id']}", json=body)
        expect_error(gone, 404, "not_found")
    expect_error(_preview(server, made["id"]), 404, "not_found")
    assert _names(server, project.id) == []
    # The row stays for messages already queued with it; only its name is free.
    [row] = server.database.query("SELECT deleted_at FROM templates WHERE id = :i", i=made["id"])
    assert row["deleted_at"] is not None


def test_a_deleted_templates_name_can_be_used_again(server: GFServer, project: GFProject) -> None:
    first = _made(server, project.id, name="receipt", subject="s", text="one")
    server.client().delete(f"/v1/templates/{first['id']}")
    second = _made(server, project.id, name="receipt", subject="s", text="two")
    assert second["id"] != first["id"]
    assert _names(server, project.id) == ["receipt"]
    # And renaming into a name freed by a delete works as well.
    other = _made(server, project.id, name="other", subject="s", text="x")
    server.client().delete(f"/v1/templates/{second['id']}")
    renamed = server.client().patch(f"/v1/templates/{other['id']}", json={"name": "receipt"})
    assert renamed.status_code == 200, renamed.text


def test_a_live_name_is_unique_in_its_project(server: GFServer, project: GFProject) -> None:
    kept = _made(server, project.id, name="digest", subject="s", text="kept")
    response = _create(server, project.id, name="digest", subject="s", text="again")
    detail = expect_error(response, 409, "template_name_taken")
    assert "digest" in detail
    assert response.json()["field"] == "name"
    other = _made(server, project.id, name="weekly", subject="s", text="x")
    renamed = server.client().patch(f"/v1/templates/{other['id']}", json={"name": "digest"})
    expect_error(renamed, 409, "template_name_taken")
    # Nothing changed by either refusal; the same name in another project is another name.
    assert sorted(_names(server, project.id)) == ["digest", "weekly"]
    assert server.client().get(f"/v1/templates/{kept['id']}").json()["template"] == kept
    elsewhere = server.create_project("Elsewhere")
    assert _made(server, elsewhere.id, name="digest", subject="s", text="x")["name"] == "digest"


def test_concurrent_creates_of_one_name_make_one_template(
    server: GFServer, project: GFProject
) -> None:
    """The unique index decides a race (on PostgreSQL the later inserts wait for the first
    to commit, then fail inside their savepoint): one 201, the rest 409, never a 500."""
    start = threading.Barrier(6)

    def create(n: int) -> int:
        start.wait()
        body = {"name": "race", "subject": "s", "text": f"copy {n}"}
        response = httpx.post(
            f"{server.url}/v1/projects/{project.id}/templates", json=body, timeout=30,
            headers={"Authorization": f"Bearer {server.workspace_key}"},
        )  # fmt: skip
        if response.status_code != 201:
            expect_error(response, 409, "template_name_taken")
        return response.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(create, range(6)))
    assert statuses == [201, 409, 409, 409, 409, 409]
    assert _names(server, project.id) == ["race"]


def test_concurrent_changes_each_get_their_own_version(
    server: GFServer, project: GFProject
) -> None:
    """A worker caches compiled templates by (id, version): two contents must never share
    a version, however the changes race."""
    made = _made(server, project.id, name="busy", subject="s", text="v1")
    start = threading.Barrier(5)

    def change(n: int) -> tuple[int, str]:
        start.wait()
        response = httpx.patch(
            f"{server.url}/v1/templates/{made['id']}", json={"text": f"change {n}"},
            timeout=30, headers={"Authorization": f"Bearer {server.workspace_key}"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        template = response.json()["template"]
        return template["version"], template["text"]

    with ThreadPoolExecutor(5) as pool:
        answers = sorted(pool.map(change, range(5)))
    assert [version for version, _ in answers] == [2, 3, 4, 5, 6]
    final = server.client().get(f"/v1/templates/{made['id']}").json()["template"]
    assert (final["version"], final["text"]) == answers[-1]


# Validation.


def test_a_liquid_error_names_the_field_and_the_line(server: GFServer, project: GFProject) -> None:
    html = "<p>one</p>\n<p>two</p>\n<p>{% if profile.vip %}three</p>\n<p>four</p>"
    response = _create(server, project.id, name="broken", subject="ok", html=html)
    detail = expect_error(response, 400, "validation_error")
    body = response.json()
    assert (body["field"], body["line"]) == ("html", 3)
    assert detail.startswith("html, line 3"), detail
    assert "if" in detail  # python-liquid says which block is unclosed

    response = _create(server, project.id, name="broken", subject="Hi {{ name | nope }}", text="x")
    detail = expect_error(response, 400, "validation_error")
    assert (response.json()["field"], response.json()["line"]) == ("subject", 1)
    assert "unknown filter 'nope'" in detail

    text = "line 1\nline 2\nline 3\n{{ profile. }}"
    response = _create(server, project.id, name="broken", subject="s", text=text)
    expect_error(response, 400, "validation_error")
    assert (response.json()["field"], response.json()["line"]) == ("text", 4)
    assert _names(server, project.id) == []  # nothing half-saved


def test_a_change_is_checked_like_a_new_template(server: GFServer, project: GFProject) -> None:
    made = _made(server, project.id, name="t", subject="s", html="<p>fine</p>")
    response = server.client().patch(
        f"/v1/templates/{made['id']}", json={"html": "<p>\n{{ oops </p>"}
    )
    expect_error(response, 400, "validation_error")
    assert (response.json()["field"], response.json()["line"]) == ("html", 2)
    # The last body cannot be taken away; name, kind and subject cannot be null.
    for change, field in (
        ({"html": None}, "html"), ({"html": ""}, "html"), ({"subject": None}, "subject"),
        ({"name": None}, "name"), ({"kind": None}, "kind"), ({"kind": "newsletter"}, "kind"),
        ({"name": "   "}, "name"), ({"version": 7}, "version"),
    ):  # fmt: skip
        response = server.client().patch(f"/v1/templates/{made['id']}", json=change)
        expect_error(response, 400, "validation_error")
        assert response.json()["field"] == field, (change, response.text)
    assert server.client().get(f"/v1/templates/{made['id']}").json()["template"] == made


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "n", "subject": "s"}, "html"),  # no body at all
        ({"name": "n", "subject": "s", "html": "", "text": ""}, "html"),
        ({"name": "n", "html": "<p>x</p>"}, "subject"),
        ({"name": "n", "subject": "   ", "html": "<p>x</p>"}, "subject"),
        ({"subject": "s", "html": "<p>x</p>"}, "name"),
        ({"name": "", "subject": "s", "html": "<p>x</p>"}, "name"),
        ({"name": "a\nb", "subject": "s", "html": "<p>x</p>"}, "name"),
        ({"name": "n" * 201, "subject": "s", "html": "<p>x</p>"}, "name"),
        ({"name": "n", "subject": "s", "html": "<p>x</p>", "kind": "newsletter"}, "kind"),
        ({"name": "n", "subject": "s", "html": "<p>x</p>", "body": "x"}, "body"),
        ({"name": "n", "subject": "s", "html": 5}, "html"),
        ({"name": "n", "subject": "s", "html": "<p>x</p>", "mjml": "<mjml></mjml>"}, "mjml"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    server: GFServer, project: GFProject, body: dict[str, Any], field: str
) -> None:
    response = _create(server, project.id, **body)
    expect_error(response, 400, "validation_error")
    assert response.json()["field"] == field, response.text


# MJML and text.

MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ profile.first_name | default: "there" }}</mj-text>
        <mj-button href="https://example.com/?ref={{ data.ref }}">Open</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def test_mjml_is_compiled_at_save_and_the_text_derived(
    server: GFServer, project: GFProject
) -> None:
    made = _made(server, project.id, name="mj", subject="Hi", mjml=MJML)
    assert made["mjml"] == MJML
    assert made["html"].lstrip().lower().startswith("<!doctype html>")
    assert "<mj-" not in made["html"]
    assert 'Hello {{ profile.first_name | default: "there" }}' in made["html"]
    assert made["text"] is None  # derived from the HTML at render time

    shown = _previewed(server, made["id"], traits={"first_name": "Ada"}, data={"ref": "a&b"})
    assert "Hello Ada" in shown["html"]
    assert "ref=a&amp;b" in shown["html"]  # values are escaped in HTML
    assert "Hello Ada" in shown["text"]
    assert "<" not in shown["text"]
    assert shown["warnings"] == []

    # A change of the MJML compiles again; the HTML cannot be edited beside it.
    changed = server.client().patch(
        f"/v1/templates/{made['id']}", json={"mjml": MJML.replace("Hello", "Welcome")}
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()["template"]
    assert "Welcome {{" in after["html"]
    assert after["version"] == 2
    refused = server.client().patch(f"/v1/templates/{made['id']}", json={"html": "<p>x</p>"})
    assert expect_error(refused, 400, "validation_error")
    # Dropping the MJML keeps its HTML, now edited as HTML.
    plain = server.client().patch(f"/v1/templates/{made['id']}", json={"mjml": None}).json()
    assert (plain["template"]["mjml"], plain["template"]["html"]) == (None, after["html"])
    edited = server.client().patch(f"/v1/templates/{made['id']}", json={"html": "<p>x</p>"})
    assert edited.json()["template"]["html"] == "<p>x</p>"


def test_an_mjml_error_names_the_field(server: GFServer, project: GFProject) -> None:
    response = _create(
        server, project.id, name="bad", subject="s", mjml="<mjml>\n<mj-body>\n<mj-nope>"
    )
    detail = expect_error(response, 400, "validation_error")
    assert response.json()["field"] == "mjml"
    assert "MJML" in detail


def test_a_given_text_part_is_kept_as_written(server: GFServer, project: GFProject) -> None:
    made = _made(
        server, project.id, name="both", subject="s", html="<b>{{ data.n }}</b>",
        text="N = {{ data.n }}",
    )  # fmt: skip
    assert made["text"] == "N = {{ data.n }}"
    shown = _previewed(server, made["id"], data={"n": 3})
    assert (shown["html"], shown["text"]) == ("<b>3</b>", "N = 3")


# Preview.


def test_the_preview_lists_undefined_variables(server: GFServer, project: GFProject) -> None:
    made = _made(
        server, project.id, name="order",
        subject="Order {{ data.order.id }} for {{ profile.name }}",
        html="<p>{{ profile.name }} bought {{ data.order.item }} ({{ event.name }})</p>"
        "<p>{{ profile.nickname | default: 'friend' }}</p>",
    )  # fmt: skip
    shown = _previewed(server, made["id"], traits={"name": "Ada"}, data={"order": {"id": 7}})
    assert shown["subject"] == "Order 7 for Ada"
    assert shown["html"] == "<p>Ada bought  ()</p><p>friend</p>"
    assert shown["warnings"] == [
        {"type": "undefined_variable", "variable": "data.order.item", "fields": ["html"]},
        {"type": "undefined_variable", "variable": "event.name", "fields": ["html"]},
        # Not profile.nickname: its ``| default`` is the author's answer to its absence.
    ]
    # With nothing given, everything is undefined and renders empty; nothing fails.
    bare = _previewed(server, made["id"])
    assert bare["subject"] == "Order for"
    assert [w["variable"] for w in bare["warnings"]][:2] == ["data.order.id", "profile.name"]
    assert bare["warnings"][0]["fields"] == ["subject"]
    assert {"profile.name": ["subject", "html"]}.items() <= {
        w["variable"]: w["fields"] for w in bare["warnings"]
    }.items()


def test_the_preview_has_every_variable_of_the_contract(
    server: GFServer, project: GFProject
) -> None:
    made = _made(
        server, project.id, name="vars", subject="{{ project.name }}",
        text="{{ project.id }}|{{ event.name }}|{{ event.properties.plan }}|{{ data.x }}|"
        "{{ unsubscribe_url }}|{{ preferences_url }}",
    )  # fmt: skip
    shown = _previewed(
        server, made["id"], event={"name": "upgraded", "properties": {"plan": "pro"}},
        data={"x": [1, 2]},
    )  # fmt: skip
    assert shown["subject"] == "Templates"
    project_id, event, plan, data, unsubscribe, preferences = shown["text"].split("|")
    assert (project_id, event, plan, data) == (project.id, "upgraded", "pro", "12")
    assert unsubscribe.startswith(("http://", "https://"))
    assert unsubscribe.endswith("/unsubscribe/preview")
    assert preferences.endswith("/preferences/preview")
    assert shown["html"] is None  # a text-only template
    assert shown["warnings"] == []


def _profile_of(server: GFServer, project_id: str, identity: str) -> dict[str, Any]:
    """The live profile known by ``identity``, once a worker has stitched it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = server.client().get(
            f"/v1/projects/{project_id}/profiles", params={"identity": identity}
        )
        assert found.status_code == 200, found.text
        if found.json()["profiles"]:
            [profile] = found.json()["profiles"]
            return dict(profile)
        time.sleep(0.05)
    raise AssertionError(f"no profile for {identity!r} after 20 s")


def _ingest(server: GFServer, project: GFProject, event: dict[str, Any]) -> None:
    response = server.client(project.secret_key).post("/v1/events", json=event)
    assert response.status_code == 202, response.text


def test_the_preview_renders_a_profile_of_the_project(server: GFServer, project: GFProject) -> None:
    _ingest(server, project, {
        "type": "identify", "external_id": "ada",
        "traits": {"first_name": "Ada", "email": "ada@example.com", "plan": "free"},
    })  # fmt: skip
    ada = _profile_of(server, project.id, "ada")
    made = _made(
        server, project.id, name="hello", subject="Hi {{ profile.first_name }}",
        text="{{ profile.id }} {{ profile.email }} {{ profile.plan }}",
    )  # fmt: skip
    shown = _previewed(server, made["id"], profile_id=ada["id"])
    assert shown["subject"] == "Hi Ada"
    assert shown["text"] == f"{ada['id']} ada@example.com free"
    # Given traits are laid over the profile's.
    shown = _previewed(server, made["id"], profile_id=ada["id"], traits={"plan": "pro"})
    assert shown["text"] == f"{ada['id']} ada@example.com pro"

    # A merged profile's id renders the profile it was merged into.
    _ingest(server, project, {"type": "track", "event": "visit", "anonymous_id": "dev-1"})
    visitor = _profile_of(server, project.id, "dev-1")
    _ingest(server, project, {
        "type": "track", "event": "login", "anonymous_id": "dev-1", "external_id": "ada",
    })  # fmt: skip
    deadline = time.monotonic() + 20
    while _profile_of(server, project.id, "dev-1")["id"] == visitor["id"]:
        assert time.monotonic() < deadline, "the profiles were not merged"
        time.sleep(0.05)
    survivor = _profile_of(server, project.id, "dev-1")
    shown = _previewed(server, made["id"], profile_id=visitor["id"])
    assert shown["text"].startswith(f"{survivor['id']} ")

    # Another project's profile, an unknown one: not found.
    other = server.create_project("Other")
    _ingest(server, other, {"type": "identify", "external_id": "bob", "traits": {"x": 1}})
    bob = _profile_of(server, other.id, "bob")
    expect_error(_preview(server, made["id"], profile_id=bob["id"]), 404, "not_found")
    expect_error(_preview(server, made["id"], profile_id="prf_nope"), 404, "not_found")


def test_an_erased_profile_cannot_be_previewed(server: GFServer, project: GFProject) -> None:
    _ingest(server, project, {
        "type": "identify", "external_id": "gone", "traits": {"email": "gone@example.com"},
    })  # fmt: skip
    person = _profile_of(server, project.id, "gone")
    made = _made(server, project.id, name="t", subject="s", text="{{ profile.email }}")
    erase = server.client(project.secret_key).post(
        f"/v1/profiles/{person['id']}/erase", json={"reason": "internal", "request_id": "r1"}
    )
    assert erase.status_code == 202, erase.text
    deadline = time.monotonic() + 20
    while True:
        detail = server.client().get(f"/v1/projects/{project.id}/profiles/{person['id']}")
        if detail.json()["profile"]["erased_at"] is not None:
            break
        assert time.monotonic() < deadline, "the erasure did not run"
        time.sleep(0.05)
    response = _preview(server, made["id"], profile_id=person["id"])
    detail_text = expect_error(response, 404, "not_found")
    assert "erased" in detail_text
    assert "gone@example.com" not in response.text


def test_includes_reach_the_projects_live_templates(server: GFServer, project: GFProject) -> None:
    footer = _made(
        server, project.id, name="footer", subject="(not included)",
        html='<footer>Bye {{ profile.first_name }} <a href="{{ unsubscribe_url }}">x</a></footer>',
    )  # fmt: skip
    _made(server, project.id, name="sig", subject="s", text="-- {{ who }}{{ project.name }}")
    main = _made(
        server, project.id, name="main", subject="s",
        html="{% assign who = 'me' %}<p>Hi</p>{% include 'footer' %}{% render 'sig' %}",
    )  # fmt: skip
    shown = _previewed(server, main["id"], traits={"first_name": "Ada"})
    assert shown["html"].startswith("<p>Hi</p><footer>Bye Ada <a href=")
    assert "/unsubscribe/preview" in shown["html"]
    # render sees the globals (project) but not the includer's own variables (who).
    assert shown["html"].endswith("</footer>-- Templates")
    assert "Bye Ada" in shown["text"]
    assert "(not included)" not in shown["html"]

    # An edited partial applies at once; a deleted one is missing, named.
    server.client().patch(f"/v1/templates/{footer['id']}", json={"html": "<i>new</i>"})
    assert _previewed(server, main["id"])["html"].startswith("<p>Hi</p><i>new</i>")
    server.client().delete(f"/v1/templates/{footer['id']}")
    response = _preview(server, main["id"])
    detail = expect_error(response, 400, "validation_error")
    assert "footer" in detail
    assert (response.json()["field"], response.json()["reason"]) == ("html", "not_found")

    # Another project's template of that name is not reachable.
    other = server.create_project("Other includes")
    _made(server, other.id, name="secret", subject="s", text="other project's")
    peek = _made(server, project.id, name="peek", subject="s", text="{% include 'secret' %}")
    response = _preview(server, peek["id"])
    assert expect_error(response, 400, "validation_error")
    assert response.json()["reason"] == "not_found"
    assert "other project" not in response.text


@pytest.mark.parametrize("include", ["/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd"])
def test_an_include_of_a_file_finds_nothing(
    server: GFServer, project: GFProject, include: str
) -> None:
    made = _made(server, project.id, name="probe", subject="s", text=f"{{% include '{include}' %}}")
    response = _preview(server, made["id"])
    detail = expect_error(response, 400, "validation_error")
    assert response.json()["reason"] == "not_found"
    assert include in detail
    assert "root:" not in response.text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "{% for i in (1..100000000) %}{% for j in (1..100000000) %}x{% endfor %}{% endfor %}",
            "loop_limit",
        ),
        (
            "{% assign s = 'xxxxxxxxxx' %}{% for i in (1..40) %}{% assign s = s | append: s %}"
            "{% endfor %}{{ s }}",
            None,
        ),
        ("{% include 'self' %}", "depth_limit"),
        ("{{ profile.__class__ }}{{ data.__init__.__globals__ }}ok", "rendered"),
    ],
)
def test_the_sandbox_bounds_a_render_and_the_server_goes_on(
    server: GFServer, project: GFProject, text: str, reason: str | None
) -> None:
    made = _made(server, project.id, name="self", subject="s", text=text)
    response = _preview(server, made["id"], data={"a": 1}, traits={"x": 1})
    if reason == "rendered":  # no attribute of a Python object is reachable
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "ok"
    else:
        detail = expect_error(response, 400, "validation_error")
        assert response.json()["field"] == "text"
        if reason is not None:
            assert response.json()["reason"] == reason, detail
        else:  # output or memory, whichever the doubling meets first
            assert response.json()["reason"] in ("output_limit", "memory_limit", "size_limit")
    assert server.client().get("/healthz").status_code == 200
    assert "Traceback" not in server.logs()


def test_bad_preview_bodies_are_refused_naming_the_field(
    server: GFServer, project: GFProject
) -> None:
    made = _made(server, project.id, name="t", subject="s", text="x")
    for body, field in (
        ({"traits": [1]}, "traits"), ({"event": {"name": "x", "props": {}}}, "event"),
        ({"data": "x"}, "data"), ({"profile": "x"}, "profile"),
        # As deep as POST /v1/messages allows, and no deeper: a preview must not pass data
        # that the send would refuse.
        ({"data": _nested(33)}, "data"), ({"traits": _nested(33)}, "traits"),
        ({"event": {"name": "x", "properties": _nested(33)}}, "event"),
    ):  # fmt: skip
        response = _preview(server, made["id"], **body)
        expect_error(response, 400, "validation_error")
        assert response.json()["field"] == field, response.text
    assert _preview(server, made["id"], data=_nested(32)).status_code == 200


def _nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep (itself level 1)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# Listing.


def test_the_list_pages_newest_first(server: GFServer, project: GFProject) -> None:
    made = [_made(server, project.id, name=f"t{i}", subject="s", text="x")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = server.client().get(f"/v1/projects/{project.id}/templates", params=params).json()
        seen += [t["id"] for t in page["templates"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (made[::-1], 3)
    for params, field in (({"cursor": "nonsense"}, "cursor"), ({"limit": 0}, "limit")):
        response = server.client().get(f"/v1/projects/{project.id}/templates", params=params)
        expect_error(response, 400, "validation_error")
        assert response.json()["field"] == field


# Tenancy.


def test_another_workspace_gets_not_found_for_everything(
    server: GFServer, project: GFProject
) -> None:
    made = _made(server, project.id, name="mine", subject="s", text="x")
    intruder = server.create_workspace("Intruder")
    outsider = server.client(intruder.key)
    missing_id = "tpl_00000000000000000000"
    for method, path, body in (
        ("GET", "/v1/templates/{id}", None),
        ("PATCH", "/v1/templates/{id}", {"subject": "hijacked"}),
        ("POST", "/v1/templates/{id}/preview", {}),
        ("DELETE", "/v1/templates/{id}", None),
    ):
        theirs = outsider.request(method, path.format(id=made["id"]), json=body)
        absent = outsider.request(method, path.format(id=missing_id), json=body)
        expect_error(theirs, 404, "not_found")
        assert theirs.json() == absent.json()
    collection = f"/v1/projects/{project.id}/templates"
    expect_error(outsider.get(collection), 404, "not_found")
    expect_error(outsider.post(collection, json={"name": "x", "subject": "s", "text": "x"}),
                 404, "not_found")  # fmt: skip
    # A project key is not a management key.
    expect_error(server.client(project.secret_key).get(collection), 403, "wrong_key_type")
    assert server.client().get(f"/v1/templates/{made['id']}").json()["template"] == made
    assert _names(server, project.id) == ["mine"]
