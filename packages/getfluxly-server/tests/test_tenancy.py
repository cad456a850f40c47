"""Tenancy through the real server: projects and keys over the API and the ``getfluxly`` CLI.

Contract (spec section 1): keys are shown once, stored only as hashes, and revocable; a
workspace key (``gf_live_``) manages its workspace; project keys (``gflux_secret_``,
``gflux_pub_``) authenticate but are refused by management endpoints (403 wrong_key_type).
The API tests run on SQLite and on PostgreSQL, on one server per backend shared by this
module (``gf_module_server``): each test makes its own projects, keys and workspaces and checks
only those.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from flux_testkit.gfserver import GFServer, expect_error


def test_project_keys_are_shown_once_and_stored_only_as_hashes(
    gf_module_server: GFServer,
) -> None:
    server = gf_module_server
    client = server.client()
    created = client.post("/v1/projects", json={"name": "Shop"})
    assert created.status_code == 201, created.text
    body = created.json()
    project = body["project"]
    assert project["workspace_id"] == server.workspace_id
    assert project["name"] == "Shop"
    secret, publishable = body["keys"]["secret"], body["keys"]["publishable"]
    assert secret["key"].startswith("gflux_secret_")
    assert publishable["key"].startswith("gflux_pub_")
    for issued, kind in ((secret, "secret"), (publishable, "publishable")):
        assert issued["kind"] == kind
        assert issued["project_id"] == project["id"]
        assert issued["revoked_at"] is None
        # The hint tells keys apart in lists without giving the key away.
        assert issued["hint"].endswith("…")
        assert issued["key"].startswith(issued["hint"][:-1])
        assert len(issued["hint"]) < len(issued["key"]) - 20

    plaintexts = (secret["key"], publishable["key"], server.workspace_key)
    for path in (
        f"/v1/projects/{project['id']}",
        f"/v1/projects/{project['id']}/keys",
        "/v1/projects",
        "/v1/keys",
    ):
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert not any(key in response.text for key in plaintexts), path

    listed = client.get(f"/v1/projects/{project['id']}/keys").json()["keys"]
    assert {k["id"] for k in listed} == {secret["id"], publishable["id"]}
    assert all("key" not in k for k in listed)
    projects = client.get("/v1/projects").json()["projects"]
    assert project["id"] in [p["id"] for p in projects]

    stored = server.database.stored_bytes()
    assert not any(key.encode() in stored for key in plaintexts)
    rows = server.database.query(
        "SELECT hint, key_hash FROM api_keys WHERE project_id = :p", p=project["id"]
    )
    assert sorted(r["hint"] + "…" for r in rows) == sorted(k["hint"] for k in (secret, publishable))
    assert all(len(r["key_hash"]) == 64 for r in rows)  # SHA-256, hex


def test_project_keys_authenticate_until_revoked(gf_module_server: GFServer) -> None:
    server = gf_module_server
    project = server.create_project()
    secret = server.client(project.secret_key)
    publishable = server.client(project.publishable_key)
    # Known keys of the wrong kind: authenticated (403, not 401) but refused.
    expect_error(secret.get("/v1/projects"), 403, "wrong_key_type")
    expect_error(publishable.get("/v1/projects"), 403, "wrong_key_type")

    revoked = server.client().delete(f"/v1/keys/{project.secret_key_id}")
    assert revoked.status_code == 200, revoked.text
    revoked_at = revoked.json()["key"]["revoked_at"]
    assert revoked_at is not None

    expect_error(secret.get("/v1/projects"), 401, "unauthenticated")
    expect_error(publishable.get("/v1/projects"), 403, "wrong_key_type")
    # Revoking again changes nothing.
    again = server.client().delete(f"/v1/keys/{project.secret_key_id}")
    assert again.status_code == 200
    assert again.json()["key"]["revoked_at"] == revoked_at
    listed = server.client().get(f"/v1/projects/{project.id}/keys").json()["keys"]
    assert {k["id"]: k["revoked_at"] for k in listed} == {
        project.secret_key_id: revoked_at,
        project.publishable_key_id: None,
    }


def test_workspace_keys_are_created_listed_and_revoked(gf_module_server: GFServer) -> None:
    server = gf_module_server
    owner = server.client()
    made = owner.post("/v1/keys", json={"kind": "workspace", "name": "deploy"})
    assert made.status_code == 201, made.text
    issued = made.json()["key"]
    assert issued["key"].startswith("gf_live_")
    assert (issued["kind"], issued["name"], issued["project_id"]) == ("workspace", "deploy", None)

    deploy = server.client(issued["key"])
    project = server.create_project("Made by deploy", key=issued["key"])
    assert project.workspace_id == server.workspace_id
    assert project.id in [p["id"] for p in owner.get("/v1/projects").json()["projects"]]

    listed = owner.get("/v1/keys")
    assert issued["id"] in {k["id"] for k in listed.json()["keys"]}
    assert issued["key"] not in listed.text

    # Project keys are made under their project, never as workspace keys.
    detail = expect_error(owner.post("/v1/keys", json={"kind": "secret"}), 400, "validation_error")
    assert "/v1/projects/" in detail
    extra = owner.post(f"/v1/projects/{project.id}/keys", json={"kind": "publishable"})
    assert extra.status_code == 201, extra.text
    assert extra.json()["key"]["key"].startswith("gflux_pub_")
    assert extra.json()["key"]["project_id"] == project.id

    assert owner.delete(f"/v1/keys/{issued['id']}").status_code == 200
    expect_error(deploy.get("/v1/projects"), 401, "unauthenticated")
    assert owner.get("/v1/projects").status_code == 200
    expect_error(owner.delete("/v1/keys/key_00000000000000000000"), 404, "not_found")


def _run_all(server: GFServer, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``getfluxly`` commands at once (each start costs about a second)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: server.cli(*args, check=False), commands))


def _ok(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def _refused(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    # The last line is the refusal (alembic may log its schema check before it).
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert text in last
    assert "Traceback" not in result.stderr


# The CLI runs the same domain and storage functions as the API, which the tests above run on
# both databases; each CLI start costs over a second of CPU, so this one runs on SQLite only.
@pytest.mark.parametrize("gf_module_server", ["sqlite"], indirect=True)
def test_cli_manages_workspaces_projects_and_keys(gf_module_server: GFServer) -> None:
    server = gf_module_server
    home = server.workspace_id  # the database's own workspace, for refusals across tenants
    made_ws = server.cli("workspace", "create", "CLI workspace")
    workspace = _ok(made_ws)
    assert isinstance(workspace, dict)
    assert set(workspace) == {"workspace_id", "workspace_key"}
    assert workspace["workspace_key"].startswith("gf_live_")
    assert "shown this once" in made_ws.stderr
    ws = workspace["workspace_id"]

    made_project, made_key = _run_all(
        server,
        ["project", "create", "--workspace", ws, "CLI project"],
        ["key", "create", "--workspace", ws, "--kind", "workspace", "--name", "ci"],
    )
    project = _ok(made_project)
    assert isinstance(project, dict)
    assert project["secret_key"].startswith("gflux_secret_")
    assert project["publishable_key"].startswith("gflux_pub_")
    ci_key = _ok(made_key)
    assert isinstance(ci_key, dict)
    assert ci_key["key"].startswith("gf_live_")

    # What the CLI made works on the running API, in its own workspace only.
    api = server.client(workspace["workspace_key"])
    assert [p["id"] for p in api.get("/v1/projects").json()["projects"]] == [project["project_id"]]
    assert server.client(ci_key["key"]).get("/v1/projects").status_code == 200
    expect_error(server.client(project["secret_key"]).get("/v1/keys"), 403, "wrong_key_type")
    home_projects = server.client().get("/v1/projects").json()["projects"]
    assert project["project_id"] not in [p["id"] for p in home_projects]
    [secret_key_id] = [
        k["id"]
        for k in api.get(f"/v1/projects/{project['project_id']}/keys").json()["keys"]
        if k["kind"] == "secret"
    ]

    # Revoking works in the key's own workspace only.
    revoke, revoke_across = _run_all(
        server,
        ["key", "revoke", "--workspace", ws, ci_key["key_id"]],
        ["key", "revoke", "--workspace", home, secret_key_id],
    )
    assert _ok(revoke) is None
    assert f"revoked {ci_key['key_id']}" in revoke.stderr
    expect_error(server.client(ci_key["key"]).get("/v1/projects"), 401, "unauthenticated")
    _refused(revoke_across, "No such key")
    assert server.client(project["secret_key"]).get("/v1/keys").status_code == 403  # still valid

    listing = server.cli("key", "list", "--workspace", ws)
    keys = _ok(listing)
    assert isinstance(keys, list)
    assert {k["id"]: k["revoked_at"] is not None for k in keys} == {
        ci_key["key_id"]: True,
        secret_key_id: False,
        **{k["id"]: False for k in keys if k["id"] not in (ci_key["key_id"], secret_key_id)},
    }
    assert len(keys) == 4  # the first workspace key, ci, and the project's two
    for plaintext in (workspace["workspace_key"], ci_key["key"], project["secret_key"]):
        assert plaintext not in listing.stdout
