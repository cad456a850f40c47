"""The management API as its OpenAPI document describes it: every workspace-key operation
has a request schema (where it takes a body) and a response schema (or answers 204 No
Content, which has no body), and every request model
refuses fields it does not know, naming them (issue 10, finding 1: 50 MB of unknown fields
was once a 201). Run against the real server on both databases."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFServer, expect_error

#: The project-key paths: ingest keeps its measured hand validation (api/ingest.py), and the
#: browser script is a file, not JSON. Everything else is the management API.
NOT_MANAGEMENT = ("/v1/events", "/v1/identify/", "/v1/profiles/{profile_id}/erase", "/v1/browser/")
METHODS = ("get", "post", "put", "patch", "delete")


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _described(document: dict[str, Any], schema: dict[str, Any] | None) -> bool:
    """A schema that says something: typed properties, or a union of such schemas."""
    if not schema:
        return False
    schema = _resolve(document, schema)
    if "oneOf" in schema or "anyOf" in schema:
        return all(_described(document, s) for s in schema.get("oneOf", schema.get("anyOf")))
    return schema.get("type") == "object" and bool(schema.get("properties"))


def management_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and not path.startswith(NOT_MANAGEMENT)
        for method, operation in item.items()
        if method in METHODS
    ]


def missing_schemas(document: dict[str, Any]) -> list[str]:
    """What every management operation lacks: a JSON answer schema, and for a method with a
    body, a JSON request schema."""
    missing = []
    for method, path, operation in management_operations(document):
        # 204 No Content is an answer without a body (a DELETE that has nothing to show).
        answers = [
            answer for status, answer in operation.get("responses", {}).items()
            if status.startswith("2") and status != "204"
        ]  # fmt: skip
        no_content = "204" in operation.get("responses", {})
        json_answers = [a.get("content", {}).get("application/json", {}) for a in answers]
        if (not json_answers and not no_content) or not all(
            _described(document, a.get("schema")) for a in json_answers
        ):
            missing.append(f"{method} {path}: response schema")
        if method in ("POST", "PUT", "PATCH"):
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if not _described(document, body.get("schema")):
                missing.append(f"{method} {path}: request schema")
    return missing


@pytest.fixture(scope="module")
def openapi(gf_module_server: GFServer) -> dict[str, Any]:
    response = gf_module_server.client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_every_management_operation_has_request_and_response_schemas(
    openapi: dict[str, Any],
) -> None:
    operations = management_operations(openapi)
    # The walk covers the API (a filter that matched nothing would pass vacuously).
    assert {"POST /v1/projects", "PATCH /v1/email-providers/{provider_id}"} <= {
        f"{method} {path}" for method, path, _ in operations
    }
    assert missing_schemas(openapi) == []


def test_the_walk_notices_an_operation_without_schemas(openapi: dict[str, Any]) -> None:
    """The check above can fail: the same walk over a copy with one schema taken away."""
    broken = {**openapi, "paths": dict(openapi["paths"])}
    post = dict(broken["paths"]["/v1/projects"]["post"])
    post["requestBody"] = {"content": {"application/json": {"schema": {}}}}
    broken["paths"]["/v1/projects"] = {**broken["paths"]["/v1/projects"], "post": post}
    new = set(missing_schemas(broken)) - set(missing_schemas(openapi))
    assert new == {"POST /v1/projects: request schema"}


def _refused(response: httpx.Response, field: str) -> None:
    detail = expect_error(response, 400, "validation_error")
    assert field in detail, detail
    assert response.json()["field"] == field


def test_unknown_fields_are_refused_naming_the_field(gf_module_server: GFServer) -> None:
    project = gf_module_server.create_project("Unknown fields")
    owner = gf_module_server.client()
    _refused(owner.post("/v1/projects", json={"name": "x", "nmae": "typo"}), "nmae")
    _refused(owner.post("/v1/keys", json={"kind": "workspace", "scope": "all"}), "scope")
    keys = f"/v1/projects/{project.id}/keys"
    _refused(owner.post(keys, json={"kind": "secret", "expires": 1}), "expires")
    names = [p["name"] for p in owner.get("/v1/projects").json()["projects"]]
    assert "x" not in names


def test_validation_errors_name_the_field_and_what_is_wrong(gf_module_server: GFServer) -> None:
    owner = gf_module_server.client()
    response = owner.post("/v1/projects", json={"name": ""})
    _refused(response, "name")
    assert "at least 1 character" in response.json()["detail"]
    response = owner.post("/v1/keys", json={"kind": "root"})
    _refused(response, "kind")
    assert "'workspace'" in response.json()["detail"]
    detail = expect_error(owner.post("/v1/projects", json=["name"]), 400, "validation_error")
    assert "JSON object" in detail
