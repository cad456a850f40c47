"""The segments API through the real server and its worker, on SQLite and PostgreSQL (engine
spec section 3).

``POST /v1/projects/{project_id}/segments`` ``{"name", "rule"}`` → 201 ``{"segment": {...}}``
(an invalid rule: 400 ``validation_error`` naming its JSON path; a live name taken: 409
``segment_name_taken``); ``GET /v1/segments/{id}`` with ``count``; ``GET
/v1/segments/{id}/members`` (cursor paging); ``PATCH``/``DELETE``; the list; ``POST
/v1/projects/{project_id}/segments/preview`` ``{"rule"}`` → ``{"count"}``. Members are
computed in the background, then kept current as events arrive and as time passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFProject, GFServer, expect_error
from flux_testkit.pytest_fixtures import GFServerFactory


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``check()`` once it is truthy (polled), else the test fails with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout} s"
            return value
        time.sleep(0.1)


def _segment(client: httpx.Client, segment_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/segments/{segment_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["segment"]
    return found


def _create(client: httpx.Client, project_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/segments", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()["segment"]
    return made


def _send(server: GFServer, project: GFProject, *events: dict[str, Any]) -> None:
    response = server.client(project.secret_key).post(
        "/v1/events/batch", json={"events": list(events)}
    )
    assert response.status_code == 202, response.text


@pytest.fixture
def server(gf_server_factory: GFServerFactory) -> GFServer:
    # A pass every half second: time-based exits show within the test.
    return gf_server_factory(env={"GETFLUXLY_SEGMENT_PASS_SECONDS": "0.5"})


def test_segments_through_the_server_and_worker(server: GFServer) -> None:
    project = server.create_project("Segments")
    owner = server.client()
    now = datetime.now(UTC)
    # ada's logins: the oldest leaves the 7-day window 40 s from now (time to be seen in on
    # a loaded machine); bob has two only.
    edge = now - timedelta(days=7) + timedelta(seconds=40)
    _send(
        server, project,
        *({"event": "login", "external_id": "ada", "timestamp": t.isoformat()}
          for t in (edge, now, now)),
        *({"event": "login", "external_id": "bob", "timestamp": now.isoformat()} for _ in range(2)),
        {"type": "identify", "external_id": "ada",
         "traits": {"plan": "pro", "email": "ada@example.com"}},
        {"type": "identify", "external_id": "cy", "traits": {"plan": "free"}},
    )  # fmt: skip
    rule = {"event": "login", "count": {"gte": 3}, "within": "P7D"}

    def preview() -> int:
        response = owner.post(
            f"/v1/projects/{project.id}/segments/preview",
            json={"rule": {"trait": "plan", "op": "exists"}},
        )
        assert response.status_code == 200, response.text
        count: int = response.json()["count"]
        return count

    _eventually(lambda: preview() == 2)

    made = _create(owner, project.id, name="Active", rule=rule)
    assert made["id"].startswith("seg_")
    assert made == {
        "id": made["id"], "project_id": project.id, "name": "Active", "rule": rule, "version": 1,
        "count": 0, "created_at": made["created_at"], "updated_at": made["created_at"],
    }  # fmt: skip
    # Computed in the background: ada is in.
    _eventually(lambda: _segment(owner, made["id"])["count"] == 1)
    members = owner.get(f"/v1/segments/{made['id']}/members").json()
    assert len(members["members"]) == 1
    assert members["next_cursor"] is None
    ada = members["members"][0]["profile_id"]
    # bob's third login: in, through the event consumer.
    _send(server, project, {"event": "login", "external_id": "bob"})
    _eventually(lambda: _segment(owner, made["id"])["count"] == 2)
    # As time passes ada's oldest login leaves the window: she leaves (the periodic pass).
    _eventually(lambda: ada not in _ids(owner, made["id"]), timeout=120)
    assert _segment(owner, made["id"])["count"] == 1

    # Edit: the rule changes, version 2, recomputed.
    changed = owner.patch(f"/v1/segments/{made['id']}", json={"rule": {"event": "login"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["segment"]["version"] == 2
    _eventually(lambda: _segment(owner, made["id"])["count"] == 2)
    listed = owner.get(f"/v1/projects/{project.id}/segments").json()
    assert [s["id"] for s in listed["segments"]] == [made["id"]]
    assert listed["segments"][0]["count"] == 2
    assert owner.delete(f"/v1/segments/{made['id']}").json() == {"deleted": True, "id": made["id"]}
    expect_error(owner.get(f"/v1/segments/{made['id']}"), 404, "not_found")
    assert owner.get(f"/v1/projects/{project.id}/segments").json()["segments"] == []


def _ids(client: httpx.Client, segment_id: str) -> set[str]:
    return {
        m["profile_id"] for m in client.get(f"/v1/segments/{segment_id}/members").json()["members"]
    }


@pytest.fixture
def module_server(gf_module_server: GFServer) -> GFServer:
    return gf_module_server


def test_invalid_rules_and_names_are_refused(module_server: GFServer) -> None:
    server = module_server
    project = server.create_project("Bad segments")
    owner = server.client()
    url = f"/v1/projects/{project.id}/segments"
    bad = owner.post(url, json={"name": "x", "rule": {"all": [{"trait": "a", "op": "eq"}]}})
    detail = expect_error(bad, 400, "validation_error")
    assert bad.json()["field"] == "rule.all[0].value"
    assert detail.startswith("rule.all[0].value: ")
    preview = owner.post(f"{url}/preview", json={"rule": {"event": "x", "within": "P1M"}})
    expect_error(preview, 400, "validation_error")
    assert preview.json()["field"] == "rule.within"
    expect_error(owner.post(url, json={"name": "x"}), 400, "validation_error")
    expect_error(
        owner.post(url, json={"name": "", "rule": {"event": "x"}}), 400, "validation_error"
    )
    expect_error(
        owner.post(url, json={"name": "x", "rule": {"event": "x"}, "extra": 1}),
        400,
        "validation_error",
    )
    _create(owner, project.id, name="Taken", rule={"event": "x"})
    taken = owner.post(url, json={"name": "Taken", "rule": {"event": "y"}})
    expect_error(taken, 409, "segment_name_taken")
    other = _create(owner, project.id, name="Other", rule={"event": "y"})
    expect_error(
        owner.patch(f"/v1/segments/{other['id']}", json={"name": "Taken"}),
        409,
        "segment_name_taken",
    )
    patched = owner.patch(f"/v1/segments/{other['id']}", json={"rule": {"not": []}})
    expect_error(patched, 400, "validation_error")
    assert patched.json()["field"] == "rule.not"
    expect_error(
        owner.get(f"/v1/segments/{other['id']}/members", params={"cursor": "!!"}),
        400,
        "validation_error",
    )
    expect_error(owner.get("/v1/segments/seg_nope"), 404, "not_found")


def _automation(server: GFServer, project: GFProject, key: str | None = None) -> str:
    """A draft automation of the project (it sends nothing)."""
    made = server.client(key).post(
        f"/v1/projects/{project.id}/automations",
        json={"name": "Welcome", "trigger": {"event": "signed_up"},
              "steps": [{"id": "end", "type": "exit"}]},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["automation"]["id"])


def _broadcast(server: GFServer, project: GFProject, key: str | None = None) -> str:
    """A draft broadcast of the project (it sends nothing)."""
    client = server.client(key)
    segment = _create(client, project.id, name="All", rule={"trait": "email", "op": "exists"})
    template = client.post(
        f"/v1/projects/{project.id}/templates", json={"name": "T", "subject": "S", "text": "x"}
    )
    assert template.status_code == 201, template.text
    made = client.post(
        f"/v1/projects/{project.id}/broadcasts",
        json={"name": "News", "template_id": template.json()["template"]["id"],
              "segment_id": segment["id"]},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["broadcast"]["id"])


def test_a_rule_may_name_only_its_projects_automations_and_broadcasts(
    module_server: GFServer,
) -> None:
    server = module_server
    project = server.create_project("Mail rules")
    sibling = server.create_project("Sibling")  # same workspace, another project
    stranger = server.create_workspace("Stranger")
    theirs = server.create_project("Theirs", key=stranger.key)
    owner = server.client()
    url = f"/v1/projects/{project.id}/segments"
    ours = {
        "automation_id": _automation(server, project),
        "broadcast_id": _broadcast(server, project),
    }
    foreign = {
        "automation_id": _automation(server, theirs, stranger.key),
        "broadcast_id": _broadcast(server, theirs, stranger.key),
    }
    next_door = {"automation_id": _automation(server, sibling), "broadcast_id": ""}
    missing = {"automation_id": "aut_doesnotexist", "broadcast_id": "brd_doesnotexist"}

    # The project's own: accepted everywhere.
    rule = {"all": [{"trait": "email", "op": "exists"},
                    {"not": {"email": "clicked", **ours}}]}  # fmt: skip
    made = _create(owner, project.id, name="Not clicked", rule=rule)
    assert owner.post(f"{url}/preview", json={"rule": rule}).status_code == 200
    patched = owner.patch(f"/v1/segments/{made['id']}", json={"rule": {"email": "sent", **ours}})
    assert patched.status_code == 200, patched.text

    # Another tenant's, another project's and none at all: the same refusal, the same words.
    for field in ("automation_id", "broadcast_id"):
        said = set()
        for ids in (foreign, next_door, missing):
            if not ids[field]:
                continue
            bad = {"any": [{"event": "x"}, {"email": "opened", field: ids[field]}]}
            where = f"rule.any[1].{field}"
            answers = [
                owner.post(url, json={"name": "Bad", "rule": bad}),
                owner.post(f"{url}/preview", json={"rule": bad}),
                owner.patch(f"/v1/segments/{made['id']}", json={"rule": bad}),
            ]
            for answer in answers:
                detail = expect_error(answer, 400, "validation_error")
                assert answer.json()["field"] == where
                said.add(detail.replace(ids[field], "<id>"))
        assert len(said) == 1, said
        assert said.pop().startswith(f"rule.any[1].{field}: there is no ")
    # Nothing was saved or changed by the refusals.
    assert _segment(owner, made["id"])["rule"] == {"email": "sent", **ours}
    assert [s["name"] for s in owner.get(url).json()["segments"]].count("Bad") == 0
    # The other tenant's own segment may name its own broadcast.
    mine = server.client(stranger.key).post(
        f"/v1/projects/{theirs.id}/segments/preview",
        json={"rule": {"email": "clicked", "broadcast_id": foreign["broadcast_id"]}},
    )
    assert mine.status_code == 200, mine.text


def test_lists_and_members_page_with_cursors(module_server: GFServer) -> None:
    server = module_server
    project = server.create_project("Paging")
    owner = server.client()
    _send(server, project, *({"event": "visit", "external_id": f"u{i}"} for i in range(7)))
    made = [_create(owner, project.id, name=f"s{i}", rule={"event": "visit"}) for i in range(3)]
    _eventually(lambda: all(_segment(owner, s["id"])["count"] == 7 for s in made))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = owner.get(f"/v1/segments/{made[0]['id']}/members", params=params).json()
        seen += [m["profile_id"] for m in page["members"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    assert seen == sorted(set(seen))
    first = owner.get(f"/v1/projects/{project.id}/segments", params={"limit": 2}).json()
    second = owner.get(
        f"/v1/projects/{project.id}/segments", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [s["name"] for s in first["segments"] + second["segments"]] == ["s2", "s1", "s0"]
    assert second["next_cursor"] is None
