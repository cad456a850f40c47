"""Authentication before the body, and the global body cap (issue 10, finding 1).

Contract: every route that takes a key answers 401 / 403 / 429 from the headers alone, never
reading the request body; every route refuses a body over ``GETFLUXLY_MAX_BODY_BYTES`` with
413 ``payload_too_large``, a declared Content-Length before reading anything and a chunked
body as soon as the count passes the cap; an unexpected error is answered 500 and logged
once, with one traceback.

The first tests call the app in-process at the ASGI level, with a receive channel that
records every call, on SQLite and PostgreSQL; the socket test runs the real server and sends
headers announcing 300 MB that are never followed by a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import GFDatabase, GFServer
from flux_testkit.pytest_fixtures import GFServerFactory
from getfluxly_server.app import create_app
from getfluxly_server.crypto import Keyring
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database

HUGE = 300 * 1024 * 1024
CAP = 512 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    #: How many times the app called receive() (0: the body was never read).
    reads: int
    #: Bytes of body handed to the app.
    delivered: int = 0


@dataclass
class Body:
    """A request body, as the ASGI server would hand it over: in chunks, counted."""

    chunks: list[bytes] = field(default_factory=list)
    reads: int = 0
    delivered: int = 0

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        if not self.chunks:
            await asyncio.sleep(3600)  # a client that never sends: must never be awaited
        chunk = self.chunks.pop(0)
        self.delivered += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def _settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_body_bytes": CAP, **overrides}
    return Settings(database_url=db_url, keyring=Keyring.parse(Keyring.generate()), **values)


@pytest.fixture
def app_for(gf_database: GFDatabase, gf_db: Database) -> Iterator[Any]:
    made = []

    def build(**overrides: Any) -> Any:
        app = create_app(_settings(gf_database.sqlalchemy_url, **overrides), gf_db)
        made.append(app)
        return app

    yield build
    for app in made:
        app.state.ingest_writer.close()


def _call(
    app: Any,
    method: str,
    path: str,
    body: Body,
    headers: dict[str, str],
    query: bytes = b"",
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("192.0.2.10", 50000),
        "server": ("testserver", 80),
        "app": app,
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(app(scope, body.receive, send), 30)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(
        start["status"],
        {k.decode().lower(): v.decode() for k, v in start["headers"]},
        json.loads(raw) if raw else {},
        body.reads,
        body.delivered,
    )


MANAGEMENT = [
    ("POST", "/v1/keys"),
    ("POST", "/v1/projects"),
    ("POST", "/v1/projects/prj_x/keys"),
    ("POST", "/v1/projects/prj_x/email-providers"),
    ("PATCH", "/v1/email-providers/epr_x"),
    ("POST", "/v1/email-providers/epr_x/test"),
]
PROJECT = [("POST", "/v1/events"), ("POST", "/v1/events/batch"), ("POST", "/v1/identify/alias")]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT + PROJECT)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer gf_live_not-a-real-key", "Bearer nonsense"]
)
def test_no_key_or_a_wrong_key_is_refused_without_reading_the_body(
    app_for: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {"content-type": "application/json", "content-length": str(HUGE)}
    if authorization:
        headers["authorization"] = authorization
    body = Body([b"{" + b" " * 1024])
    # A huge body would be refused by the cap alone: raise the cap so only auth is tested.
    answer = _call(app_for(max_body_bytes=1024 * 1024 * 1024), method, path, body, headers)
    assert (answer.status, answer.body.get("error")) == (401, "unauthenticated"), answer
    assert answer.reads == 0


def test_a_key_of_the_wrong_kind_is_refused_without_reading_the_body(
    app_for: Any, gf_database: GFDatabase
) -> None:
    app = app_for(max_body_bytes=1024 * 1024 * 1024)  # so only the key type can refuse
    workspace_key = gf_database.workspace.key
    answer = _call(
        app,
        "POST",
        "/v1/projects",
        Body([b'{"name": "Made"}']),
        {"authorization": f"Bearer {workspace_key}", "content-type": "application/json"},
    )
    assert answer.status == 201, answer
    secret = answer.body["keys"]["secret"]["key"]
    publishable = answer.body["keys"]["publishable"]["key"]
    cases = [
        (secret, "POST", "/v1/keys"),
        (publishable, "POST", "/v1/projects"),
        (publishable, "POST", "/v1/identify/alias"),
        (workspace_key, "POST", "/v1/events"),
        (workspace_key, "POST", "/v1/identify/alias"),
    ]
    for key, method, path in cases:
        headers = {"authorization": f"Bearer {key}", "content-length": str(HUGE)}
        refused = _call(app, method, path, Body([b"{}"]), headers)
        assert (refused.status, refused.body.get("error")) == (403, "wrong_key_type"), (
            path,
            refused,
        )
        assert refused.reads == 0


def test_a_declared_length_over_the_cap_is_413_before_reading(
    app_for: Any, gf_database: GFDatabase
) -> None:
    app = app_for()
    for key in (None, gf_database.workspace.key):
        headers = {"content-length": str(CAP + 1), "content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        answer = _call(app, "POST", "/v1/projects", Body([b"{}"]), headers)
        assert (answer.status, answer.body.get("error")) == (413, "payload_too_large"), answer
        assert answer.reads == 0


def test_a_chunked_body_is_cut_off_once_it_passes_the_cap(
    app_for: Any, gf_database: GFDatabase
) -> None:
    """No Content-Length: the body is counted as it arrives; the chunk that passes the cap
    is the last one read, and the endpoint never runs (nothing is created)."""
    app = app_for()
    chunk = b" " * (64 * 1024)
    body = Body([b'{"name": "Chunked",', *([chunk] * 40), b"}"])  # 2.5 MB in 64 KB chunks
    headers = {"authorization": f"Bearer {gf_database.workspace.key}"}
    answer = _call(app, "POST", "/v1/projects", body, headers)
    assert (answer.status, answer.body.get("error")) == (413, "payload_too_large"), answer
    assert answer.delivered <= CAP + len(chunk)
    assert body.chunks, "the rest of the body was never read"
    assert not gf_database.query("SELECT id FROM projects WHERE name = 'Chunked'")


def test_a_body_within_the_cap_still_works(app_for: Any, gf_database: GFDatabase) -> None:
    app = app_for()
    body = Body([b'{"name": ', b'"Chunked but small"}'])
    headers = {
        "authorization": f"Bearer {gf_database.workspace.key}",
        "content-type": "application/json",
    }
    answer = _call(app, "POST", "/v1/projects", body, headers)
    assert answer.status == 201, answer
    assert answer.body["project"]["name"] == "Chunked but small"


def test_the_cap_holds_on_ingest_too(app_for: Any, gf_database: GFDatabase) -> None:
    """Ingest has its own, smaller limits: a batch over 256 KB is 413 whatever the cap."""
    app = app_for()
    made = _call(
        app,
        "POST",
        "/v1/projects",
        Body([b'{"name": "Ingest"}']),
        {
            "authorization": f"Bearer {gf_database.workspace.key}",
            "content-type": "application/json",
        },
    )
    key = made.body["keys"]["secret"]["key"]
    headers = {"authorization": f"Bearer {key}", "content-length": str(300 * 1024)}
    answer = _call(app, "POST", "/v1/events/batch", Body([b"{}"]), headers)
    assert (answer.status, answer.body.get("error")) == (413, "payload_too_large")
    assert answer.reads == 0


def test_an_unexpected_error_is_answered_500_and_logged_once(
    app_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_for()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    caplog.set_level(logging.DEBUG)
    # raise_app_exceptions: an exception escaping the app (to be logged again by the
    # server) would fail this request.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom")

    response = asyncio.run(get())
    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert "kaboom" not in response.text
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    assert "kaboom" in str(tracebacks[0].exc_info[1])  # type: ignore[index]


def _announce(server: GFServer, path: str, length: int) -> str:
    """Send headers announcing a ``length``-byte body, never send it, return the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )  # fmt: skip
        while len(body) < length and (chunk := conn.recv(65536)):
            body += chunk
        return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_the_real_server_answers_before_a_300_mb_body_arrives(
    gf_server_factory: GFServerFactory,
) -> None:
    """Headers announcing 300 MB and no body at all: the answer comes anyway; 401 when the
    cap allows such a body (authentication does not wait for it), else 413."""
    roomy = gf_server_factory(env={"GETFLUXLY_MAX_BODY_BYTES": str(1024**3)}, mode="api")
    for path in ("/v1/keys", "/v1/projects", "/v1/events/batch"):
        head = _announce(roomy, path, HUGE)
        assert head.startswith("HTTP/1.1 401 "), (path, head)
    capped = gf_server_factory(mode="api")
    head = _announce(capped, "/v1/projects", HUGE)
    assert head.startswith("HTTP/1.1 413 "), head
    assert "payload_too_large" in head
