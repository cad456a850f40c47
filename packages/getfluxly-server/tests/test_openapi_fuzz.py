"""A bounded schemathesis run against the server's own OpenAPI document (issue 10, finding 9).

Contract: with every kind of key (workspace, server, publishable, none), requests generated
from the document (valid ones, and invalid ones) never get a 5xx, and every answer is one the
document lists for that operation, with the content type and schema it gives. The ingest
bodies are described, so events are generated too; with a project key, an event the schema
allows is accepted (the documented schema is never wider than the validation).

Bounded: a fixed number of examples per operation and mode, derandomized (the same cases
each run), on SQLite. Every operation of the document is run; an operation
that cannot be loaded fails the test rather than being left out. The negative mode runs on
operations with a body or query parameters: one whose only inputs are string ids in its
path has nothing that can be made invalid (any string is a valid id; the ids the databases
cannot hold are tested in test_hostile_input.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from flux_testkit import ingest_spec
from flux_testkit.gfserver import GFProject, GFServer, Harness

EXAMPLES = 6
#: Generous limits: the fuzzer sends thousands of requests, many with wrong keys, from one
#: address (the limits themselves are tested in test_rate_limits.py and
#: test_public_rate_limits.py).
ENV = {
    "GETFLUXLY_RATE_LIMIT_BURST": "10000000",
    "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_BURST": "10000000",
    "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST": "10000000",
    "GETFLUXLY_PUBLIC_RATE_LIMIT_BURST": "10000000",
    "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_BURST": "10000000",
}


@schemathesis.check
def not_a_server_error_unless_busy(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, but a 503 ``unavailable`` with ``Retry-After`` is the server
    answering that its database is busy (test_database_busy.py): under heavy load the run
    used to get 500s there, now it gets this documented answer, which is not a fault."""
    headers = {name.lower() for name in response.headers}
    if response.status_code == 503 and "retry-after" in headers:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_unless_busy,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
INGEST = {"POST /v1/events", "POST /v1/events/batch"}


# SQLite only: the run takes about two minutes per backend on a loaded machine; the
# database-dependent hostile inputs are tested on both in test_hostile_input.py.
@pytest.fixture(scope="module", params=["sqlite"])
def fuzzed(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GFServer, GFProject]]:
    directory = tmp_path_factory.mktemp(f"gf-fuzz-{request.param}")
    database = gf_harness.database(request.param, directory / "db")
    server = GFServer(gf_harness, database, directory / "logs", env=ENV)
    try:
        server.start()
        yield server, server.create_project("Fuzzed")
    finally:
        server.close()
        database.close()


def _key(kind: str, server: GFServer, project: GFProject) -> str | None:
    return {
        "workspace": server.workspace_key,
        "server": project.secret_key,
        "publishable": project.publishable_key,
        "none": None,
    }[kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["workspace", "server", "publishable", "none"])
def test_no_5xx_and_every_answer_as_documented(
    fuzzed: tuple[GFServer, GFProject], kind: str
) -> None:
    server, project = fuzzed
    key = _key(kind, server, project)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # an operation that cannot be loaded fails here
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = list(CHECKS)
            if label in INGEST and kind in ("server", "publishable") and mode.is_positive:
                checks.append(positive_data_acceptance)
            if not mode.is_positive and not _negatable(operation):
                continue  # see the module docstring
            failure = _run(operation, mode, server.url, headers, checks)
            if failure is not None:
                failures.append(f"{label} ({mode.value}, {kind} key): {failure}")
    assert operations >= 20, operations  # the whole document, not a part of it
    assert not failures, "\n\n".join(failures)
    assert "Traceback" not in server.logs()


def _negatable(operation: Any) -> bool:
    locations = {parameter.location for parameter in operation.iter_parameters()}
    return bool(operation.get_request_payload_content_types()) or bool(
        {"query", "header"} & {str(getattr(loc, "value", loc)) for loc in locations}
    )


def _run(
    operation: Any, mode: GenerationMode, url: str, headers: dict[str, str], checks: list[Any]
) -> str | None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        case.validate_response(response, checks=checks, headers=headers)

    try:
        run()
    except Unsatisfiable:
        if mode.is_positive:
            return "no valid request could be generated from the document"
        return None  # nothing in this operation can be made invalid (e.g. string ids only)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:3000]}"
    return None


def test_the_document_describes_the_ingest_bodies_and_every_error(
    fuzzed: tuple[GFServer, GFProject],
) -> None:
    import httpx
    import jsonschema_rs

    server, _project = fuzzed
    document = httpx.get(f"{server.url}/openapi.json").json()
    paths = document["paths"]
    event = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    batch = paths["/v1/events/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert (
        batch["schema"]["properties"]["events"]["maxItems"]
        == ingest_spec.limits()["max_batch_events"]
    )
    # The documented event is never wider than the validation: no invalid example of the
    # spec fits it (the valid examples it describes are accepted: see the fuzz run).
    validator = jsonschema_rs.validator_for(event)
    for example in ingest_spec.invalid():
        assert not validator.is_valid(example.event), example.name
    assert validator.is_valid(ingest_spec.valid()[1].event)  # "every field"
    # Every operation that takes a key lists the answers a key can earn, in the error shape.
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.startswith("/v1/") and not path.startswith("/v1/browser"):
                for status in ("401", "403", "429"):
                    answer = operation["responses"].get(status)
                    assert answer is not None, (method, path, status)
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            assert "HTTPValidationError" not in str(operation["responses"]), (method, path)
