"""A project's default provider (engine spec section 2), through the real server on SQLite and
PostgreSQL: the first provider created becomes it, ``PATCH /v1/projects/{id}`` changes it to
another of the project's own providers (never null, never another project's or tenant's),
and deleting it hands the role to the oldest remaining provider (null once none is left),
also when several changes race.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from flux_testkit.gfserver import GFServer, expect_error

if TYPE_CHECKING:
    from flux_testkit.smtpd import SMTPTestServer


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    from flux_testkit.smtpd import SMTPTestServer

    with SMTPTestServer(tls="none", auth=True) as server:
        yield server


class Project:
    """One test's project on the shared server, and its workspace key's client."""

    def __init__(self, server: GFServer, relay: SMTPTestServer, name: str) -> None:
        self.server, self.relay = server, relay
        self.http = server.client()
        created = self.http.post("/v1/projects", json={"name": name})
        assert created.status_code == 201, created.text
        self.created = created.json()["project"]
        self.id: str = self.created["id"]

    def add_provider(self, name: str = "Relay") -> str:
        return str(
            self.server.create_smtp_provider(self.id, self.relay.host, self.relay.port,
                                             display_name=name)["id"]
        )  # fmt: skip

    def default(self) -> str | None:
        response = self.http.get(f"/v1/projects/{self.id}")
        assert response.status_code == 200, response.text
        value: str | None = response.json()["project"]["default_provider_id"]
        return value

    def patch(self, body: Any, key: str | None = None) -> httpx.Response:
        return self.server.client(key).patch(f"/v1/projects/{self.id}", json=body)

    def delete(self, provider_id: str) -> None:
        response = self.http.delete(f"/v1/email-providers/{provider_id}")
        assert response.status_code == 200, response.text


def test_the_first_provider_created_becomes_the_default(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    project = Project(gf_module_server, relay, "First provider")
    assert project.created["default_provider_id"] is None  # in the creation answer too
    assert project.default() is None
    first = project.add_provider("First")
    assert project.default() == first
    project.add_provider("Second")
    assert project.default() == first
    listed = {p["id"]: p for p in project.http.get("/v1/projects").json()["projects"]}
    assert listed[project.id]["default_provider_id"] == first


def test_patch_makes_another_of_its_providers_the_default(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    project = Project(gf_module_server, relay, "Patched default")
    first, second = project.add_provider("First"), project.add_provider("Second")
    response = project.patch({"default_provider_id": second})
    assert response.status_code == 200, response.text
    answer = response.json()["project"]
    assert answer["default_provider_id"] == second
    assert answer["id"] == project.id
    assert answer["name"] == "Patched default"
    assert project.default() == second
    # Nothing to change: the project as it is.
    unchanged = project.patch({})
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["project"]["default_provider_id"] == second
    assert project.patch({"default_provider_id": first}).json()["project"][
        "default_provider_id"
    ] == first  # fmt: skip


def test_patch_refuses_anything_but_one_of_its_providers(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    server = gf_module_server
    project = Project(server, relay, "Refused defaults")
    mine = project.add_provider()
    sibling = Project(server, relay, "Sibling project")  # same workspace
    siblings = sibling.add_provider()
    other = server.create_workspace("Refused defaults elsewhere")
    foreign_project = server.create_project("Foreign", key=other.key)
    foreign = server.create_smtp_provider(
        foreign_project.id, relay.host, relay.port, key=other.key
    )["id"]

    def refused(body: Any, words: str) -> str:
        response = project.patch(body)
        detail = expect_error(response, 400, "validation_error")
        assert response.json()["field"] == "default_provider_id", response.text
        assert words in detail, detail
        return detail

    refused({"default_provider_id": None}, "cannot be null")
    refused({"default_provider_id": ""}, "at least 1 character")
    refused({"default_provider_id": 7}, "valid string")
    # Not a provider of this project: unknown, deleted, a sibling project's, another
    # tenant's. All answered alike (nothing says which ids exist elsewhere).
    gone = project.add_provider("Gone")
    project.delete(gone)
    answers = {
        name: refused({"default_provider_id": value}, "is not an email provider of this project")
        .replace(value, "<id>")
        for name, value in {
            "unknown": "prv_00000000000000000000", "deleted": gone, "sibling's": siblings,
            "foreign": foreign,
        }.items()
    }  # fmt: skip
    assert len(set(answers.values())) == 1, answers
    assert f"GET /v1/projects/{project.id}/email-providers" in answers["foreign"]
    expect_error(project.patch({"default": mine}), 400, "validation_error")  # unknown field
    assert project.default() == mine
    assert sibling.default() == siblings
    foreign_view = server.client(other.key).get(f"/v1/projects/{foreign_project.id}")
    assert foreign_view.json()["project"]["default_provider_id"] == foreign


def test_other_tenants_and_project_keys_cannot_patch(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    server = gf_module_server
    project = Project(server, relay, "Guarded project")
    mine = project.add_provider()
    other = server.create_workspace("Intruders")
    foreign_project = server.create_project("Intruder project", key=other.key)
    theirs = server.create_smtp_provider(foreign_project.id, relay.host, relay.port, key=other.key)[
        "id"
    ]

    # Another workspace: not found, exactly as for a project that does not exist.
    response = project.patch({"default_provider_id": theirs}, key=other.key)
    expect_error(response, 404, "not_found")
    absent = server.client(other.key).patch(
        "/v1/projects/prj_00000000000000000000", json={"default_provider_id": theirs}
    )
    assert response.json() == absent.json()
    # The project's own keys are not management keys.
    created = server.client().post(f"/v1/projects/{project.id}/keys", json={"kind": "secret"})
    secret = created.json()["key"]["key"]
    expect_error(project.patch({"default_provider_id": mine}, key=secret), 403, "wrong_key_type")
    assert project.default() == mine


def test_deleting_the_default_hands_it_to_the_oldest_remaining(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    project = Project(gf_module_server, relay, "Handed on")
    first, second, third = (project.add_provider(name) for name in ("1st", "2nd", "3rd"))
    assert project.default() == first
    project.delete(first)
    assert project.default() == second  # the oldest remaining, not the newest
    project.patch({"default_provider_id": third})
    project.delete(second)  # not the default: nothing changes
    assert project.default() == third
    project.delete(third)
    assert project.default() is None  # none left
    fourth = project.add_provider("4th")
    assert project.default() == fourth  # the first provider again


def test_racing_changes_leave_a_default_that_exists(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    """Creates at once in a new project, then deletes at once (the default among them): the
    project's row lock lets them apply one at a time, so the default is always a provider
    the project still has."""
    project = Project(gf_module_server, relay, "Racing")
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda i: project.add_provider(f"Racer {i}"), range(6)))
    assert project.default() in made
    keep = next(p for p in made if p != project.default())
    doomed = [p for p in made if p != keep]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(project.delete, doomed))
    assert project.default() == keep
    listed = project.http.get(f"/v1/projects/{project.id}/email-providers").json()
    assert [p["id"] for p in listed["email_providers"]] == [keep]


def test_racing_deletes_and_changes_of_one_provider_never_fail(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    """Two deletes and two renames of one provider at once: one delete succeeds, the other is
    404, a rename either lands first (200) or finds nothing (404): never a 500."""
    project = Project(gf_module_server, relay, "Racing deletes")
    spare, doomed = project.add_provider("Spare"), project.add_provider("Doomed")
    project.patch({"default_provider_id": doomed})
    path = f"/v1/email-providers/{doomed}"
    calls = [
        lambda: project.http.delete(path),
        lambda: project.http.patch(path, json={"display_name": "Renamed"}),
        lambda: project.http.delete(path),
        lambda: project.http.patch(path, json={"display_name": "Renamed again"}),
    ]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda call: call(), calls))
    deletes, renames = [answers[0], answers[2]], [answers[1], answers[3]]
    assert sorted(a.status_code for a in deletes) == [200, 404], [a.text for a in answers]
    assert all(a.status_code in (200, 404) for a in renames), [a.text for a in renames]
    assert project.default() == spare
