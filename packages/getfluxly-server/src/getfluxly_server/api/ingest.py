"""Ingest (project keys): events one at a time or in batches, alias, erase.

The answer is sent only after the events are committed. Bodies are size-checked before they
are parsed (413); parsing and validation run on the event loop (microseconds an event), and
the storing goes to the ingest writer (``app.state.ingest_writer``), which commits the
events of many concurrent requests together.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from getfluxly_server.api import ingest_schema, views
from getfluxly_server.api.auth import IngestKey, ServerKey
from getfluxly_server.api.deps import database
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.api.strict_input import nul_path
from getfluxly_server.domain import identity, ingest
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.storage.group_commit import GroupCommit

router = APIRouter(prefix="/v1", tags=["ingest"])
_CONFLICT = {"model": ErrorBody, "description": "alias_conflict / erasure_in_progress"}


async def _json(request: Request, limit: int) -> Any:
    return _parse(await _read(request, limit))


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise DomainError("payload_too_large", f"The body exceeds {limit // 1024} KB")
    raw = bytearray()
    async for chunk in request.stream():  # stop reading as soon as the limit is passed
        raw += chunk
        if len(raw) > limit:
            raise DomainError("payload_too_large", f"The body exceeds {limit // 1024} KB")
    return bytes(raw)


def _parse(raw: bytes) -> Any:
    try:
        # Strict where json.loads is lax, as the databases are: NaN, Infinity and lone
        # surrogates are refused here rather than by the INSERT.
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DomainError("validation_error", f"The body is not valid JSON: {exc}") from None
    if raw.translate(_DIGITS).find(_LONG_RUN) >= 0:
        # orjson reads integers beyond 64 bits as floats, silently rounding them. Rare:
        # read such a body again, exactly, and refuse what does not fit.
        try:
            value = json.loads(raw, parse_int=_int64)
        except ValueError as exc:
            raise DomainError("validation_error", f"The body is not valid JSON: {exc}") from None
    return value


# A run of 19 digits anywhere in the body, found by mapping digits to 1 and the rest to 0:
# fifteen times faster than a regular expression over bodies full of ids and timestamps.
_DIGITS = bytes(1 if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_LONG_RUN = b"\x01" * 19


def _int64(text: str) -> int:
    number = int(text)
    if not -(2**63) <= number < 2**64:
        raise ValueError(f"the integer {text[:30]} does not fit in 64 bits; send it as a string")
    return number


async def _object_body(request: Request) -> dict[str, Any]:
    """A small JSON object body (alias, erase), with no NUL anywhere (api/strict_input.py)."""
    body = await _json(request, ingest.MAX_EVENT_BYTES)
    if not isinstance(body, dict):
        raise DomainError("validation_error", "The body must be a JSON object")
    where = nul_path(body)
    if where is not None:
        raise DomainError(
            "validation_error", f"{where}: text may not contain NUL (U+0000) characters"
        )
    return body


async def _store(request: Request, submission: ingest.Submission) -> ingest.Answer:
    writer: GroupCommit[ingest.Submission, ingest.Answer] = request.app.state.ingest_writer
    return await writer.run(submission)


@router.post(
    "/events",
    status_code=202,
    openapi_extra=ingest_schema.request_body(ingest_schema.EVENT),
    responses={202: {"model": ingest_schema.Accepted}},
)
async def track(request: Request, response: Response, who: IngestKey) -> dict[str, Any]:
    """One event: 202 once it is stored; 400 validation_error saying what is wrong."""
    payload = await _json(request, ingest.MAX_EVENT_BYTES)
    assert who.project_id is not None
    answer = await _store(
        request, ingest.prepare(who.project_id, who.key_id, [payload], batch=False)
    )
    response.status_code = answer.status
    return answer.body


@router.post(
    "/events/batch",
    status_code=202,
    openapi_extra=ingest_schema.request_body(ingest_schema.BATCH),
    responses={202: {"model": ingest_schema.BatchAccepted}},
)
async def track_batch(request: Request, response: Response, who: IngestKey) -> dict[str, Any]:
    """Up to 100 events; bad ones are reported by index, good ones stored. A replayed
    X-Idempotency-Key (24 h, per kind of key) answers the original response; the same key
    with a different body is 422 idempotency_key_reused."""
    key = request.headers.get("x-idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise DomainError(
            "validation_error", "X-Idempotency-Key must be 1-255 printable characters"
        )
    raw = await _read(request, ingest.MAX_BATCH_BYTES)
    events = ingest.parse_body(_parse(raw), batch=True)
    assert who.project_id is not None
    submission = ingest.prepare(
        who.project_id,
        who.key_id,
        events,
        batch=True,
        idempotency_key=key,
        key_kind=who.kind,
        body_hash=hashlib.sha256(raw).hexdigest() if key is not None else "",
    )
    answer = await _store(request, submission)
    response.status_code = answer.status
    return answer.body


@router.post(
    "/identify/alias",
    responses={409: _CONFLICT},
    openapi_extra=ingest_schema.request_body(ingest_schema.ALIAS),
)
async def alias(request: Request, who: ServerKey) -> dict[str, Any]:
    body = await _object_body(request)
    assert who.project_id is not None

    def run() -> dict[str, Any]:
        with database(request).transaction() as session:
            return views.alias(identity.alias(session, who.project_id, body))  # type: ignore[arg-type]

    return await run_in_threadpool(run)


@router.post(
    "/profiles/{profile_id}/erase",
    status_code=202,
    responses={409: _CONFLICT},
    openapi_extra=ingest_schema.request_body(ingest_schema.ERASE),
)
async def erase(profile_id: str, request: Request, who: ServerKey) -> dict[str, Any]:
    """Erase every stitched profile's personal data (in a worker); an audit row is kept."""
    body = await _object_body(request)
    assert who.project_id is not None

    def run() -> dict[str, Any]:
        with database(request).transaction() as session:
            asked = identity.request_erasure(session, who.project_id, profile_id, body)  # type: ignore[arg-type]
            return views.erasure(asked)

    return await run_in_threadpool(run)
