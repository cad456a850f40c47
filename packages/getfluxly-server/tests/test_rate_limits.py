"""Rate limits through the real server, on SQLite and on PostgreSQL (spec section 3, issue 10
finding 5).

Contract: a server key's requests count against its project's budget and a workspace key's
against its workspace's (keys are minted at will: a new key brings no new budget); the
publishable key, which is public, has a budget per project and client address; failed
authentications have a budget per client address, past which that address is answered 429
before its key is looked up. The client address is the socket's peer; ``X-Forwarded-For`` is
believed only from ``GETFLUXLY_TRUSTED_PROXIES``. Answers carry ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``; over the limit the answer is 429
``rate_limited`` with ``Retry-After``.

The server runs with a bucket of 3 requests refilled at 0.1 per second (the smallest rate the
settings accept): one token comes back only after 10 s, far longer than any test here takes,
so the counts below do not depend on timing. Nothing here measures time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import BACKENDS, GFProject, GFServer, Harness, expect_error

BURST = 3
LIMITS = {
    "GETFLUXLY_RATE_LIMIT_PER_SECOND": "0.1",
    "GETFLUXLY_RATE_LIMIT_BURST": str(BURST),
    "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_PER_SECOND": "0.1",
    "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_BURST": str(BURST),
}


@dataclass
class Limited:
    """The limited server, three projects made for this module, and the workspace key's
    ``X-RateLimit-Remaining`` on the three requests that made them."""

    server: GFServer
    projects: list[GFProject]
    workspace_remaining: list[str]


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def limited(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Limited]:
    backend = request.param
    directory = tmp_path_factory.mktemp(f"gf-ratelimit-{backend}")
    database = gf_harness.database(backend, directory / "db")
    server = GFServer(gf_harness, database, directory / "logs", env=LIMITS)
    try:
        server.start()
        # The workspace key's whole burst goes into making the projects every test needs
        # (each test uses keys no other test touches).
        projects, remaining = [], []
        for n in range(BURST):
            response = server.client().post("/v1/projects", json={"name": f"Limited {n}"})
            assert response.status_code == 201, response.text
            remaining.append(response.headers.get("X-RateLimit-Remaining", "missing"))
            body = response.json()
            keys = body["keys"]
            projects.append(
                GFProject(
                    id=body["project"]["id"],
                    workspace_id=body["project"]["workspace_id"],
                    secret_key=keys["secret"]["key"],
                    secret_key_id=keys["secret"]["id"],
                    publishable_key=keys["publishable"]["key"],
                    publishable_key_id=keys["publishable"]["id"],
                )
            )
        yield Limited(server, projects, remaining)
    finally:
        server.close()
        database.close()


def _event(marker: str) -> dict[str, Any]:
    return {"event": "page_viewed", "anonymous_id": "a-1", "properties": {"marker": marker}}


def _limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    """(limit, remaining, reset) as integers; fails if one is missing or not a number."""
    values = []
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        value = response.headers.get(name)
        assert value is not None, f"{name} missing: {dict(response.headers)}"
        assert value.isdigit(), f"{name}: {value!r}"
        values.append(int(value))
    return values[0], values[1], values[2]


def _stored(server: GFServer, project: GFProject, marker: str) -> int:
    rows = server.database.query(
        "SELECT properties FROM events WHERE project_id = :p", p=project.id
    )
    return sum(marker in str(r["properties"]) for r in rows)


def test_the_headers_count_down_and_the_fourth_request_is_refused(limited: Limited) -> None:
    server, project = limited.server, limited.projects[0]
    client = server.client(project.secret_key)
    remaining = []
    for _ in range(BURST):
        response = client.post("/v1/events", json=_event("countdown"))
        assert response.status_code == 202, response.text
        limit, left, reset = _limit_headers(response)
        assert limit == BURST
        assert reset >= 1  # the bucket is not full again yet
        remaining.append(left)
    assert remaining == [2, 1, 0]

    refused = client.post("/v1/events", json=_event("countdown"))
    detail = expect_error(refused, 429, "rate_limited")
    assert detail
    retry_after = refused.headers.get("Retry-After", "")
    assert retry_after.isdigit(), dict(refused.headers)
    assert int(retry_after) >= 1
    assert _limit_headers(refused)[:2] == (BURST, 0)
    # A refused request is not half-done: only the three accepted events are stored.
    assert _stored(server, project, "countdown") == BURST
    # The workspace key counted down the same way while the fixture made the projects.
    assert limited.workspace_remaining == ["2", "1", "0"]


def test_projects_and_the_publishable_key_are_limited_independently(limited: Limited) -> None:
    server = limited.server
    first, second = limited.projects[1], limited.projects[2]
    exhausted = server.client(first.secret_key)
    for _ in range(BURST):
        assert exhausted.post("/v1/events", json=_event("independent")).status_code == 202
    expect_error(exhausted.post("/v1/events", json=_event("independent")), 429, "rate_limited")

    # The same project's publishable key, and another project's key, have their own buckets.
    for key in (first.publishable_key, second.secret_key):
        response = server.client(key).post("/v1/events", json=_event("independent"))
        assert response.status_code == 202, response.text
        assert _limit_headers(response)[1] == BURST - 1
    assert _stored(server, first, "independent") == BURST + 1


def test_the_query_parameter_and_the_header_share_one_bucket(limited: Limited) -> None:
    """``?api_key=`` is the same key as ``Authorization: Bearer``, so it is the same budget
    (otherwise switching spelling would double the limit)."""
    server, key = limited.server, limited.projects[2].publishable_key
    by_header, by_query = server.client(key), server.anonymous_client()
    params = {"api_key": key}
    remaining = []
    for use_query in (False, True, False):
        if use_query:
            response = by_query.post("/v1/events", json=_event("shared"), params=params)
        else:
            response = by_header.post("/v1/events", json=_event("shared"))
        assert response.status_code == 202, response.text
        remaining.append(_limit_headers(response)[1])
    assert remaining == [2, 1, 0]
    expect_error(
        by_query.post("/v1/events", json=_event("shared"), params=params), 429, "rate_limited"
    )


def test_an_authenticated_error_answer_still_says_what_is_left(limited: Limited) -> None:
    server, key = limited.server, limited.projects[0].publishable_key
    client = server.client(key)
    refused = client.post("/v1/events", json={"event": "Not Snake"})
    expect_error(refused, 400, "validation_error")
    after = client.post("/v1/events", json=_event("after-error"))
    assert after.status_code == 202
    # The 400 did spend a token (so the next answer shows 1 left), and said so itself.
    assert _limit_headers(after)[1] == BURST - 2
    assert _limit_headers(refused)[:2] == (BURST, BURST - 1)


def test_a_newly_minted_key_brings_no_new_budget(limited: Limited) -> None:
    """Minting keys is free, so buckets are per project (server keys) and per workspace
    (workspace keys), never per key."""
    server = limited.server
    workspace = server.create_workspace("Minting")  # its own, full workspace budget
    admin = server.client(workspace.key)
    project = server.create_project("Minted", key=workspace.key)
    minted = admin.post(f"/v1/projects/{project.id}/keys", json={"kind": "secret"})
    assert minted.status_code == 201, minted.text
    assert _limit_headers(minted)[1] == BURST - 2
    new_key = minted.json()["key"]["key"]
    for _ in range(BURST):
        assert (
            server.client(project.secret_key).post("/v1/events", json=_event("minted")).status_code
            == 202
        )
    expect_error(
        server.client(new_key).post("/v1/events", json=_event("minted")), 429, "rate_limited"
    )
    # The workspace key has one request left; a freshly minted workspace key shares it.
    another = admin.post("/v1/keys", json={"kind": "workspace", "name": "second"})
    assert another.status_code == 201, another.text
    second_admin = server.client(another.json()["key"]["key"])
    expect_error(second_admin.get("/v1/projects"), 429, "rate_limited")


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(limited: Limited) -> None:
    """Without GETFLUXLY_TRUSTED_PROXIES anyone could claim a new address per request."""
    server = limited.server
    project = server.create_project("Spoofing", key=server.create_workspace("Spoof").key)
    client = server.client(project.publishable_key)
    for n in range(BURST):
        response = client.post(
            "/v1/events", json=_event("spoof"), headers={"X-Forwarded-For": f"198.51.100.{n}"}
        )
        assert response.status_code == 202, response.text
    refused = client.post(
        "/v1/events", json=_event("spoof"), headers={"X-Forwarded-For": "198.51.100.99"}
    )
    expect_error(refused, 429, "rate_limited")


PROXIED = {
    **LIMITS,
    "GETFLUXLY_TRUSTED_PROXIES": "127.0.0.1, ::1",
    "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_PER_SECOND": "0.01",
    "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST": str(BURST),
}


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def proxied(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GFServer]:
    """A limited server behind a trusted proxy (this test process, on loopback): the
    client address is what X-Forwarded-For says."""
    directory = tmp_path_factory.mktemp(f"gf-proxied-{request.param}")
    database = gf_harness.database(request.param, directory / "db")
    server = GFServer(gf_harness, database, directory / "logs", env=PROXIED)
    try:
        yield server.start()
    finally:
        server.close()
        database.close()


def _from(address: str) -> dict[str, str]:
    # The proxy appends the peer it saw; whatever the client wrote before is not trusted.
    return {"X-Forwarded-For": f"203.0.113.250, {address}"}


def test_the_publishable_key_is_limited_per_visitor_address(proxied: GFServer) -> None:
    """One visitor exhausting the public key does not lock out the others."""
    project = proxied.create_project("Visitors")
    page = proxied.client(project.publishable_key)
    for _ in range(BURST):
        accepted = page.post("/v1/events", json=_event("v"), headers=_from("198.51.100.1"))
        assert accepted.status_code == 202, accepted.text
    refused = page.post("/v1/events", json=_event("v"), headers=_from("198.51.100.1"))
    expect_error(refused, 429, "rate_limited")
    other = page.post("/v1/events", json=_event("v"), headers=_from("198.51.100.2"))
    assert other.status_code == 202, other.text
    assert _limit_headers(other)[1] == BURST - 1
    # The project's server key has its own budget, whatever address it comes from.
    server_side = proxied.client(project.secret_key)
    response = server_side.post("/v1/events", json=_event("v"), headers=_from("198.51.100.1"))
    assert response.status_code == 202, response.text


def test_failed_authentication_is_limited_per_address(proxied: GFServer) -> None:
    """Past its budget of failures, an address is refused before its key is looked up
    (even a valid key); other addresses are unaffected."""
    project = proxied.create_project("Guessing")
    guesser = proxied.anonymous_client()
    attempts = [
        {"Authorization": "Bearer gflux_secret_wrong"},
        {"Authorization": "Bearer nonsense"},
        {},
    ]
    for headers in attempts:
        response = guesser.post(
            "/v1/events", json=_event("g"), headers={**headers, **_from("198.51.100.7")}
        )
        expect_error(response, 401, "unauthenticated")
    for key in ("gflux_secret_wrong", project.secret_key):
        refused = guesser.post(
            "/v1/events",
            json=_event("g"),
            headers={"Authorization": f"Bearer {key}", **_from("198.51.100.7")},
        )
        detail = expect_error(refused, 429, "rate_limited")
        assert "failed authentications" in detail
        assert refused.headers.get("Retry-After", "").isdigit()
    # Management routes too, and another address still gets in.
    expect_error(guesser.get("/v1/projects", headers=_from("198.51.100.7")), 429, "rate_limited")
    fine = proxied.client(project.secret_key).post(
        "/v1/events", json=_event("g"), headers=_from("198.51.100.8")
    )
    assert fine.status_code == 202, fine.text
