"""The suppression list, through the real server and through the domain service feedback
calls, on SQLite and on PostgreSQL (engine spec section 6).

Contract: ``GET|POST /v1/projects/{project_id}/suppressions`` (``{"email", "reason"}``,
reasons exactly ``hard_bounce``, ``complaint``, ``soft_bounce_limit``, ``unsubscribed``,
``manual``; ``manual`` when left out) and ``DELETE
/v1/projects/{project_id}/suppressions/{email}`` (204; 404 when the address is not listed).
Addresses are kept lower-cased and found in any case. Adding a listed address again is
idempotent: 200 with the entry as it was (the first reason stands); a new entry is 201.
``domain.suppressions.suppress`` (what bounces, complaints and unsubscribes call) is safe
to call twice and from concurrent transactions.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

import pytest

from flux_testkit.gfserver import GFDatabase, GFProject, GFServer, expect_error
from getfluxly_server.domain import suppressions, tenancy
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.storage.db import Database


@pytest.fixture
def server(gf_module_server: GFServer) -> GFServer:
    return gf_module_server


@pytest.fixture
def project(server: GFServer) -> GFProject:
    return server.create_project("Suppressions")


def _path(project_id: str) -> str:
    return f"/v1/projects/{project_id}/suppressions"


def _list(server: GFServer, project_id: str, **params: Any) -> dict[str, Any]:
    response = server.client().get(_path(project_id), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _emails(server: GFServer, project_id: str, **params: Any) -> list[str]:
    return [s["email"] for s in _list(server, project_id, **params)["suppressions"]]


def test_an_address_is_added_listed_and_removed(server: GFServer, project: GFProject) -> None:
    owner = server.client()
    added = owner.post(
        _path(project.id), json={"email": " Ada@Example.COM ", "reason": "complaint"}
    )
    assert added.status_code == 201, added.text
    entry = added.json()["suppression"]
    assert entry == {
        "project_id": project.id, "email": "ada@example.com", "reason": "complaint",
        "message_id": None, "created_at": entry["created_at"],
    }  # fmt: skip
    assert entry["created_at"].endswith("Z")
    assert _list(server, project.id) == {"suppressions": [entry], "next_cursor": None}

    # Again, in another spelling and with another reason: the entry as it was.
    again = owner.post(_path(project.id), json={"email": "ADA@example.com", "reason": "manual"})
    assert (again.status_code, again.json()) == (200, {"suppression": entry})
    assert _emails(server, project.id) == ["ada@example.com"]

    removed = owner.delete(f"{_path(project.id)}/ADA@EXAMPLE.COM")
    assert (removed.status_code, removed.content) == (204, b"")
    assert _emails(server, project.id) == []
    expect_error(owner.delete(f"{_path(project.id)}/ada@example.com"), 404, "not_found")
    # Once removed it can be added anew.
    assert owner.post(_path(project.id), json={"email": "ada@example.com"}).status_code == 201


@pytest.mark.parametrize(
    "email", ["a+tag@example.com", "a/b@example.com", "o'neil@example.com", "100%@example.com"]
)
def test_any_valid_address_can_be_removed_by_its_path(
    server: GFServer, project: GFProject, email: str
) -> None:
    """Characters a path treats specially (``/``, ``%``, ``+``) are part of the address."""
    owner = server.client()
    assert owner.post(_path(project.id), json={"email": email}).status_code == 201
    assert _emails(server, project.id) == [email]
    removed = owner.delete(f"{_path(project.id)}/{quote(email, safe='@')}")
    assert removed.status_code == 204, removed.text
    assert _emails(server, project.id) == []


def test_the_reason_is_manual_unless_given(server: GFServer, project: GFProject) -> None:
    response = server.client().post(_path(project.id), json={"email": "bob@example.com"})
    assert response.status_code == 201, response.text
    assert response.json()["suppression"]["reason"] == "manual"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "bob@example.com", "reason": "bounced"}, "reason"),
        ({"email": "bob@example.com", "reason": "Manual"}, "reason"),
        ({"email": "bob@example.com", "reason": None}, "reason"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "Bob <bob@example.com>"}, "email"),
        ({"email": "bob@example.com\r\nBcc: x@example.com"}, "email"),
        ({"email": "a@b@example.com"}, "email"),
        ({"email": ""}, "email"),
        ({"email": "   "}, "email"),
        ({"email": 42}, "email"),
        ({"reason": "manual"}, "email"),
        ({"email": "x" * 310 + "@example.com"}, "email"),
        ({"email": "bob@example.com", "note": "x"}, "note"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    server: GFServer, project: GFProject, body: dict[str, Any], field: str
) -> None:
    response = server.client().post(_path(project.id), json=body)
    detail = expect_error(response, 400, "validation_error")
    assert response.json()["field"] == field, response.text
    if field == "reason":
        assert "hard_bounce" in detail
        assert "soft_bounce_limit" in detail
    assert _emails(server, project.id) == []


def test_the_list_filters_and_pages_in_address_order(server: GFServer, project: GFProject) -> None:
    entries = {
        "carol@example.com": "hard_bounce", "alice@example.com": "complaint",
        "dave@other.org": "unsubscribed", "bob@example.com": "soft_bounce_limit",
        "eve_1@example.com": "manual", "eve11@example.com": "manual",
    }  # fmt: skip
    for email, reason in entries.items():
        response = server.client().post(_path(project.id), json={"email": email, "reason": reason})
        assert response.status_code == 201, response.text

    pages: list[list[str]] = []
    cursor = None
    while True:
        page = _list(server, project.id, limit=4, **({"cursor": cursor} if cursor else {}))
        pages.append([s["email"] for s in page["suppressions"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [
        ["alice@example.com", "bob@example.com", "carol@example.com", "dave@other.org"],
        ["eve11@example.com", "eve_1@example.com"],
    ]
    assert _emails(server, project.id, reason="manual") == [
        "eve11@example.com",
        "eve_1@example.com",
    ]
    assert _emails(server, project.id, reason="hard_bounce") == ["carol@example.com"]
    assert _emails(server, project.id, email="OTHER.org") == ["dave@other.org"]
    # The search is for text, not a pattern: "_" is an underscore, "%" a percent sign.
    assert _emails(server, project.id, email="eve_") == ["eve_1@example.com"]
    assert _emails(server, project.id, email="%") == []
    assert _emails(server, project.id, email="example", reason="complaint") == ["alice@example.com"]
    for params, field in (
        ({"reason": "bounced"}, "reason"), ({"cursor": "!!"}, "cursor"), ({"limit": 501}, "limit"),
    ):  # fmt: skip
        response = server.client().get(_path(project.id), params=params)
        expect_error(response, 400, "validation_error")
        assert response.json()["field"] == field


def test_another_workspace_gets_not_found(server: GFServer, project: GFProject) -> None:
    owner = server.client()
    assert owner.post(_path(project.id), json={"email": "kept@example.com"}).status_code == 201
    intruder = server.create_workspace("Suppression intruder")
    outsider = server.client(intruder.key)
    missing = _path("prj_00000000000000000000")
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "", {"email": "new@example.com"}),
        ("DELETE", "/kept@example.com", None),
    ):
        theirs = outsider.request(method, _path(project.id) + suffix, json=body)
        absent = outsider.request(method, missing + suffix, json=body)
        expect_error(theirs, 404, "not_found")
        assert theirs.json() == absent.json()
    # Another project of the same workspace has a list of its own.
    other = server.create_project("Other list")
    expect_error(owner.delete(f"{_path(other.id)}/kept@example.com"), 404, "not_found")
    assert _emails(server, other.id) == []
    # A project key is not a management key.
    expect_error(server.client(project.secret_key).get(_path(project.id)), 403, "wrong_key_type")
    assert _emails(server, project.id) == ["kept@example.com"]


# The domain service feedback calls.


def _project(db: Database, database: GFDatabase) -> str:
    with db.transaction() as session:
        return tenancy.create_project(session, database.workspace.id, "Feedback").project.id


def test_suppress_keeps_the_first_cause_and_the_check_sees_every_spelling(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = _project(gf_db, gf_database)
    other_id = _project(gf_db, gf_database)
    with gf_db.transaction() as session:
        first = suppressions.suppress(
            session, project_id, "Ada@Example.com", "hard_bounce", "msg_1"
        )
        again = suppressions.suppress(session, project_id, "ada@example.com", "complaint", "msg_2")
    assert (first.added, again.added) == (True, False)
    assert (again.entry.reason, again.entry.message_id) == ("hard_bounce", "msg_1")
    with gf_db.read() as session:
        given = ["ADA@example.com", "ada@example.com", "bob@example.com"]
        assert suppressions.suppressed(session, project_id, given) == set(given[:2])
        assert suppressions.suppressed(session, other_id, given) == set()
    with gf_db.transaction() as session:
        for email, reason in (("x@example.com", "bounce"), ("nope", "manual")):
            with pytest.raises(ValidationFailed):
                suppressions.suppress(session, project_id, email, reason)


def test_concurrent_suppressions_of_one_address_leave_one_entry(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project_id = _project(gf_db, gf_database)
    start = threading.Barrier(4)
    results: list[bool] = []
    errors: list[BaseException] = []

    def bounce(n: int) -> None:
        try:
            start.wait()
            with gf_db.transaction() as session:
                done = suppressions.suppress(session, project_id, "Bob@example.com", "hard_bounce")
                results.append(done.added)
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=bounce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == [False, False, False, True]
    rows = gf_database.query("SELECT email FROM suppressions WHERE project_id = :p", p=project_id)
    assert rows == [{"email": "bob@example.com"}]
