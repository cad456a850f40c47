"""The automations API (engine spec section 4) on the real server, SQLite and PostgreSQL:
create as a draft, read with stats, list with paging, change (a new version), activate and
pause, delete; every invalid definition is 400 ``validation_error`` with the JSON path of its
fault, references included (templates, providers, segments of the project)."""

from __future__ import annotations

from typing import Any

from flux_testkit.gfserver import GFProject, GFServer, expect_error


def _setup(server: GFServer) -> tuple[GFProject, str]:
    project = server.create_project("Automations API")
    made = server.client().post(
        f"/v1/projects/{project.id}/templates", json={"name": "w", "subject": "Hi", "text": "x"}
    )
    assert made.status_code == 201, made.text
    return project, str(made.json()["template"]["id"])


def _definition(template_id: str) -> dict[str, Any]:
    return {
        "name": "Welcome",
        "trigger": {"event": "signed_up", "where": [{"property": "plan", "value": "pro"}]},
        "steps": [
            {"id": "hello", "type": "send_email", "template_id": template_id},
            {"id": "wait", "type": "delay", "duration": "P1D"},
            {
                "id": "check", "type": "wait_for_event", "event": "activated", "timeout": "P3D",
                "on_timeout": [{"id": "nudge", "type": "send_email", "template_id": template_id}],
            },
        ],
        "exit_on": {"event": "unsubscribed"},
        "quiet_hours": {"start": "21:00", "end": "08:00", "action": "postpone"},
        "frequency_cap": {"max": 3, "per": "P7D"},
        "reentry": {"after": "P30D"},
    }  # fmt: skip


def test_create_read_list_change_activate_pause_delete(gf_module_server: GFServer) -> None:
    server = gf_module_server
    api = server.client()
    project, template_id = _setup(server)
    body = _definition(template_id)
    made = api.post(f"/v1/projects/{project.id}/automations", json=body)
    assert made.status_code == 201, made.text
    automation = made.json()["automation"]
    assert automation["id"].startswith("aut_")
    assert (automation["status"], automation["version"]) == ("draft", 1)
    assert {k: automation[k] for k in body if k != "name"} == {
        k: v for k, v in body.items() if k != "name"
    }

    found = api.get(f"/v1/automations/{automation['id']}").json()["automation"]
    assert found["stats"] == {
        step: {"entered": 0, "completed": 0, "sent": 0}
        for step in ("hello", "wait", "check", "nudge")
    }
    assert found["runs"] == {"running": 0, "completed": 0, "exited": 0}

    second = api.post(f"/v1/projects/{project.id}/automations", json={**body, "name": "Second"})
    assert second.status_code == 201
    page = api.get(f"/v1/projects/{project.id}/automations", params={"limit": 1}).json()
    assert [a["name"] for a in page["automations"]] == ["Second"]
    rest = api.get(
        f"/v1/projects/{project.id}/automations", params={"cursor": page["next_cursor"]}
    ).json()
    assert [a["name"] for a in rest["automations"]] == ["Welcome"]
    assert rest["next_cursor"] is None

    expect_error(api.post(f"/v1/automations/{automation['id']}/pause"), 409, "conflict")
    on = api.post(f"/v1/automations/{automation['id']}/activate")
    assert on.json()["automation"]["status"] == "active"
    assert on.json()["automation"]["activated_at"].endswith("Z")
    renamed = api.patch(f"/v1/automations/{automation['id']}", json={"name": "Renamed"})
    assert (renamed.json()["automation"]["name"], renamed.json()["automation"]["version"]) == (
        "Renamed",
        1,
    )
    changed = api.patch(
        f"/v1/automations/{automation['id']}", json={"quiet_hours": None, "reentry": "always"}
    )
    assert changed.status_code == 200, changed.text
    view = changed.json()["automation"]
    assert (view["version"], view["quiet_hours"], view["reentry"]) == (2, None, "always")
    assert view["status"] == "active"
    off = api.post(f"/v1/automations/{automation['id']}/pause")
    assert off.json()["automation"]["status"] == "paused"

    gone = api.delete(f"/v1/automations/{automation['id']}")
    assert gone.json() == {"deleted": True, "id": automation["id"]}
    expect_error(api.get(f"/v1/automations/{automation['id']}"), 404, "not_found")
    listed = api.get(f"/v1/projects/{project.id}/automations").json()["automations"]
    assert [a["name"] for a in listed] == ["Second"]


def test_invalid_definitions_are_refused_with_the_json_path(gf_module_server: GFServer) -> None:
    server = gf_module_server
    api = server.client()
    project, template_id = _setup(server)
    other, other_template = _setup(server)
    good = _definition(template_id)
    send = {"id": "s", "type": "send_email", "template_id": template_id}
    missing = "00000000000000000000"

    def steps(*listed: dict[str, Any]) -> dict[str, Any]:
        return {**good, "steps": list(listed)}

    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "steps": [{"id": "x", "type": "teleport"}]}, "steps[0].type"),
        ({**good, "steps": [send, send]}, "steps[1].id"),
        (steps({**send, "template_id": f"tpl_{missing}"}), "steps[0].template_id"),
        # Another project's template is as unknown as one that does not exist.
        (steps({**send, "template_id": other_template}), "steps[0].template_id"),
        (steps({**send, "provider_id": f"prv_{missing}"}), "steps[0].provider_id"),
        ({**good, "trigger": {"segment_entered": f"seg_{missing}"}}, "trigger.segment_entered"),
        ({**good, "steps": [{"id": "d", "type": "delay", "duration": "P1M"}]}, "steps[0].duration"),
        (steps({"id": "d", "type": "delay", "until": {"time": "9"}}), "steps[0].until.time"),
        ({**good, "quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
        (
            steps(good["steps"][2] | {"on_event": [{"id": "n", "type": "delay", "duration": "x"}]}),
            "steps[0].on_event[0].duration",
        ),
    ]  # fmt: skip
    for body, path in cases:
        refused = api.post(f"/v1/projects/{project.id}/automations", json=body)
        detail = expect_error(refused, 400, "validation_error")
        assert refused.json().get("field") == path, (path, refused.text)
        assert detail.startswith(path), detail
    # Not a JSON object where one is needed: pydantic's check, still a 400 naming the field.
    expect_error(
        api.post(f"/v1/projects/{project.id}/automations", json={**good, "trigger": "signed_up"}),
        400,
        "validation_error",
    )
    # A change is checked the same way, and nothing is stored.
    made = api.post(f"/v1/projects/{project.id}/automations", json=good).json()["automation"]
    refused = api.patch(f"/v1/automations/{made['id']}", json={"steps": [send, send]})
    expect_error(refused, 400, "validation_error")
    assert api.get(f"/v1/automations/{made['id']}").json()["automation"]["version"] == 1
    # A template deleted after the automation was saved: activation refuses, naming the step.
    api.delete(f"/v1/templates/{template_id}")
    refused = api.post(f"/v1/automations/{made['id']}/activate")
    expect_error(refused, 400, "validation_error")
    assert refused.json()["field"] == "steps[0].template_id"
    assert api.get(f"/v1/automations/{made['id']}").json()["automation"]["status"] == "draft"
    assert other.id != project.id


def test_a_project_time_zone_is_an_iana_name(gf_module_server: GFServer) -> None:
    project, _ = _setup(gf_module_server)
    api = gf_module_server.client()
    refused = api.patch(f"/v1/projects/{project.id}", json={"timezone": "Mars/Olympus"})
    assert expect_error(refused, 400, "validation_error").startswith("timezone")
    set_ = api.patch(f"/v1/projects/{project.id}", json={"timezone": "America/Sao_Paulo"})
    assert set_.json()["project"]["timezone"] == "America/Sao_Paulo"
    cleared = api.patch(f"/v1/projects/{project.id}", json={"timezone": None})
    assert cleared.json()["project"]["timezone"] is None


def _broadcast(server: GFServer, project: GFProject, template_id: str) -> str:
    """A draft broadcast of the project (it sends nothing)."""
    api = server.client()
    segment = api.post(
        f"/v1/projects/{project.id}/segments",
        json={"name": "All", "rule": {"trait": "email", "op": "exists"}},
    )
    assert segment.status_code == 201, segment.text
    made = api.post(
        f"/v1/projects/{project.id}/broadcasts",
        json={"name": "News", "template_id": template_id,
              "segment_id": segment.json()["segment"]["id"]},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["broadcast"]["id"])


def test_a_branch_rule_may_name_only_its_projects_automations_and_broadcasts(
    gf_module_server: GFServer,
) -> None:
    server = gf_module_server
    api = server.client()
    project, template_id = _setup(server)
    other, other_template = _setup(server)
    url = f"/v1/projects/{project.id}/automations"
    good = _definition(template_id)
    ours = {
        "broadcast_id": _broadcast(server, project, template_id),
        "automation_id": api.post(url, json=good).json()["automation"]["id"],
    }
    theirs = {
        "broadcast_id": _broadcast(server, other, other_template),
        "automation_id": api.post(
            f"/v1/projects/{other.id}/automations", json=_definition(other_template)
        ).json()["automation"]["id"],
    }
    missing = {"broadcast_id": "brd_doesnotexist", "automation_id": "aut_doesnotexist"}

    def with_branch(mail: dict[str, Any]) -> dict[str, Any]:
        rule = {"any": [{"event": "x"}, {"email": "opened", **mail}]}
        inner = {"id": "b", "type": "branch", "rule": rule, "then": [{"id": "e", "type": "exit"}]}
        wait = {
            "id": "w", "type": "wait_for_event", "event": "y", "timeout": "P1D",
            "on_timeout": [inner],
        }  # fmt: skip
        return {**good, "steps": [good["steps"][0], wait]}

    made = api.post(url, json=with_branch(ours))
    assert made.status_code == 201, made.text
    automation_id = made.json()["automation"]["id"]
    for field in ("broadcast_id", "automation_id"):
        where = f"steps[1].on_timeout[0].rule.any[1].{field}"
        said = set()
        for ids in (theirs, missing):
            body = with_branch({field: ids[field]})
            answers = [
                api.post(url, json=body),
                api.patch(f"/v1/automations/{automation_id}", json={"steps": body["steps"]}),
            ]
            for answer in answers:
                detail = expect_error(answer, 400, "validation_error")
                assert answer.json()["field"] == where, answer.text
                said.add(detail.replace(ids[field], "<id>"))
        # Another project's id and one that does not exist: the same words.
        assert len(said) == 1, said
        assert said.pop().startswith(f"{where}: there is no ")
    # The refused change stored nothing; the automation still activates.
    found = api.get(f"/v1/automations/{automation_id}").json()["automation"]
    assert (found["version"], found["steps"]) == (1, with_branch(ours)["steps"])
    assert api.post(f"/v1/automations/{automation_id}/activate").status_code == 200
