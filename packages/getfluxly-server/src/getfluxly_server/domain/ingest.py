"""Ingest: validate events, store them durably, answer; processing happens after, in a worker.

An event is acknowledged (202) only once the transaction that stored it has committed, so an
acknowledged event is never lost. Retries are harmless: a batch's ``X-Idempotency-Key``
replays the first response for 24 hours, and every event is stored at most once per
``(project, message_id)``. A bad event in a batch is reported by index and never rejects its
good neighbours.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError
from getfluxly_server.queue.kinds import JobKind, JobPayload
from getfluxly_server.storage import events as store
from getfluxly_server.storage import tenancy as tenancy_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.group_commit import GroupCommit, writer_threads

PROCESS_JOB = "events.process"
#: The ingest rules, written once for the server, the SDK, the browser script and the test
#: fake (spec/ingest.json; each component's tests check it against that file).
SPEC: dict[str, Any] = json.loads(
    (resources.files("getfluxly_server") / "spec" / "ingest.json").read_text(encoding="utf-8")
)
_LIMITS: dict[str, int] = SPEC["limits"]
EVENT_NAME = re.compile(SPEC["patterns"]["event_name"])
ID_FIELDS: tuple[str, ...] = tuple(SPEC["id_fields"])
FIELDS = frozenset(SPEC["fields"])
TYPES = tuple(SPEC["types"])
MAX_EVENT_BYTES = _LIMITS["max_event_bytes"]
MAX_BATCH_BYTES = _LIMITS["max_batch_bytes"]
MAX_BATCH_EVENTS = _LIMITS["max_batch_events"]
MAX_EVENT_NAME = _LIMITS["max_event_name_length"]
MAX_PROPERTIES = _LIMITS["max_property_keys"]
MAX_ID_LENGTH = _LIMITS["max_id_length"]
MAX_MESSAGE_ID = _LIMITS["max_message_id_length"]
#: How deep properties, traits and context may nest (the object itself is level 1). Deeper
#: values parse, but cannot be stored (the JSON encoder stops at 255 levels).
MAX_DEPTH = _LIMITS["max_depth"]
REPLAY_WINDOW = timedelta(hours=24)
#: The most events one ingest transaction stores (from as many requests as fit).
MAX_EVENTS_PER_COMMIT = 1_000


class EventInvalid(Exception):  # noqa: N818 - reads as what happened
    """One event broke a rule; ``detail`` says which."""


def request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise EventInvalid(f"{name} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise EventInvalid(f"{name} {value[:40]!r} is not ISO-8601") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise EventInvalid(f"{name} {value[:40]!r} is outside years 1-9999 in UTC") from None


def _corrected(timestamp: datetime, sent_at: datetime, received_at: datetime) -> datetime:
    """``timestamp`` shifted by how far the client's clock was off (``sent_at`` against
    our ``received_at``)."""
    try:
        return timestamp + (received_at - sent_at)
    except OverflowError:
        raise EventInvalid(
            "sent_at is so far from the time the event was received that the corrected "
            "timestamp falls outside years 1-9999; send the client's current time as sent_at"
        ) from None


def _identifier(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventInvalid(f"{name} must be a string")
    text = str(value).strip()
    if not text or len(text) > MAX_ID_LENGTH or not text.isprintable():
        raise EventInvalid(f"{name} must be 1-{MAX_ID_LENGTH} printable characters")
    return text


def _object(value: Any, name: str, *, limit: int | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventInvalid(f"{name} must be an object")
    if limit is not None and len(value) > limit:
        raise EventInvalid(f"{name} has {len(value)} keys; at most {limit} are allowed")
    if value:
        _check_storable(value, name, 1)
    return value


def _check_storable(value: dict[str, Any] | list[Any], where: str, depth: int) -> None:
    """Refuse what both databases cannot store alike: nesting beyond MAX_DEPTH, and NUL
    (U+0000) in a key or string (PostgreSQL refuses it, SQLite keeps it). Lone surrogates
    never get this far: the body parser refuses them."""
    if depth > MAX_DEPTH:
        raise EventInvalid(f"{where} nests deeper than {MAX_DEPTH} levels")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            raise EventInvalid(f"{where}: a key holds a NUL (U+0000) character")
        if isinstance(item, str):
            if "\x00" in item:
                raise EventInvalid(f"{where}.{key} holds a NUL (U+0000) character")
        elif isinstance(item, dict | list) and item:
            _check_storable(item, f"{where}.{key}", depth + 1)


def validate(raw: Any, project_id: str, received_at: datetime) -> dict[str, Any]:
    """An event body → the row to store; raises EventInvalid saying what is wrong."""
    if not isinstance(raw, dict):
        raise EventInvalid("each event must be a JSON object")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise EventInvalid(f"unknown fields: {', '.join(unknown)}")
    kind = raw.get("type", "track")
    if kind not in TYPES:
        raise EventInvalid(f"type must be one of {', '.join(TYPES)}")
    name = raw.get("event")
    named = isinstance(name, str) and len(name) <= MAX_EVENT_NAME and EVENT_NAME.match(name)
    if (kind == "track" or name is not None) and not named:
        raise EventInvalid(
            f"event must be a snake_case name of at most {MAX_EVENT_NAME} characters"
        )
    ids = {field: _identifier(raw.get(field), field) for field in ID_FIELDS}
    if not any(ids.values()):
        raise EventInvalid("at least one of anonymous_id, external_id, user_id is required")
    properties = _object(raw.get("properties"), "properties", limit=MAX_PROPERTIES)
    traits = _object(raw.get("traits"), "traits")
    if traits and kind != "identify":
        raise EventInvalid("traits belong to identify events (type: identify)")
    timestamp = received_at
    if raw.get("timestamp") is not None:
        timestamp = _parse_time(raw["timestamp"], "timestamp")
        if raw.get("sent_at") is not None:
            # The client's clock may be off: shift by how far its send time was from ours.
            timestamp = _corrected(timestamp, _parse_time(raw["sent_at"], "sent_at"), received_at)
    message_id = raw.get("message_id")
    if message_id is None:
        message_id = str(uuid.uuid4())
    elif (
        not isinstance(message_id, str)
        or not 0 < len(message_id) <= MAX_MESSAGE_ID
        or not message_id.isprintable()
    ):
        raise EventInvalid(f"message_id must be 1-{MAX_MESSAGE_ID} printable characters (a UUID)")
    return {
        "project_id": project_id,
        "message_id": message_id,
        "type": kind,
        "name": name,
        **ids,
        "properties": properties,
        "traits": traits,
        "context": _object(raw.get("context"), "context"),
        "timestamp": timestamp,
        "received_at": received_at,
    }


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Submission:
    """One request's events, validated outside any transaction, waiting to be stored."""

    project_id: str
    key_id: str
    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    batch: bool
    received_at: datetime
    idempotency_key: str | None = None
    #: The kind of API key that sent it (idempotency keys are per kind) and the SHA-256 of
    #: the request body (a key reused with another body is refused).
    key_kind: str = "secret"
    body_hash: str = ""

    @property
    def weight(self) -> int:
        return max(1, len(self.rows))


def prepare(
    project_id: str,
    key_id: str,
    raw_events: list[Any],
    *,
    batch: bool,
    idempotency_key: str | None = None,
    received_at: datetime | None = None,
    key_kind: str = "secret",
    body_hash: str = "",
) -> Submission:
    """Validate a request's events (CPU only, no database). A single bad event is a
    validation_error; in a batch each bad one is reported by its index instead."""
    received_at = received_at or datetime.now(UTC)
    rows, errors = [], []
    for index, raw in enumerate(raw_events):
        try:
            rows.append(validate(raw, project_id, received_at))
        except EventInvalid as exc:
            if not batch:
                raise DomainError("validation_error", str(exc)) from None
            errors.append({"index": index, "error": "validation_error", "detail": str(exc)})
    return Submission(
        project_id, key_id, rows, errors, batch, received_at, idempotency_key, key_kind, body_hash
    )


class ProcessEvents(JobPayload):
    """Stitch a project's stored, not yet processed events (all of them: one pass serves
    every request that asked)."""

    project_id: str


PROCESS_EVENTS = JobKind(PROCESS_JOB, ProcessEvents)


def store_all(session: Session, submissions: Sequence[Submission]) -> list[Answer | DomainError]:
    """Store the submissions in the caller's transaction, which must commit before any of
    the answers is sent; one answer (or error) per submission, in order.

    The key that sent each submission is checked again here, in the transaction that
    stores its events: the API may have authenticated it from a cache, and a key revoked
    since then must store nothing. All the events go in as one INSERT, however many
    requests they came from (see storage.group_commit).
    """
    live = tenancy_store.live_key_ids(session, {s.key_id for s in submissions})
    answers: list[Answer | DomainError] = []
    rows: list[dict[str, Any]] = []
    for submission in submissions:
        answer, fresh = _answer(session, submission, submission.key_id in live)
        if fresh:
            rows += submission.rows
        answers.append(answer)
    # Processing is asked for once per project that sent events (if any were new; a pass
    # over a project with nothing new costs one query).
    new = store.insert_events(session, rows)
    for project_id in sorted({row["project_id"] for row in rows} if new else ()):
        PROCESS_EVENTS.enqueue_once(
            session, ProcessEvents(project_id=project_id), f"{PROCESS_JOB}:{project_id}"
        )
    return answers


def _answer(
    session: Session, submission: Submission, key_live: bool
) -> tuple[Answer | DomainError, bool]:
    """The answer to a submission, and whether its events are to be inserted (not when its
    key was revoked, nor when its idempotency key replays an earlier answer)."""
    if not key_live:
        return DomainError("unauthenticated", "Unknown or revoked API key"), False
    body: dict[str, Any] = {"accepted": len(submission.rows), "rejected": len(submission.errors)}
    if submission.batch:
        body["errors"] = submission.errors
    body["request_id"] = request_id()
    key = submission.idempotency_key
    if key is not None:
        since = submission.received_at - REPLAY_WINDOW
        earlier = store.record_response(
            session, submission.project_id, submission.key_kind, key, submission.body_hash,
            since, 202, body,
        )  # fmt: skip
        if earlier is not None:
            if earlier.body_hash is not None and earlier.body_hash != submission.body_hash:
                return DomainError(
                    "idempotency_key_reused",
                    "This X-Idempotency-Key was used in the last 24 hours for a different "
                    "body; send a new key for a new batch (a retry must resend the same body)",
                ), False
            return Answer(earlier.status, dict(earlier.body)), False
    return Answer(202, body), True


def writer(db: Database) -> GroupCommit[Submission, Answer]:
    """The group commit that stores submissions (``group_commit.writer_threads`` threads), up
    to MAX_EVENTS_PER_COMMIT events per transaction."""
    return GroupCommit(
        db,
        store_all,
        name="ingest-writer",
        threads=writer_threads(db),
        max_weight=MAX_EVENTS_PER_COMMIT,
        weight=lambda submission: submission.weight,
    )


def parse_body(payload: Mapping[str, Any] | Any, *, batch: bool) -> list[Any]:
    """The events of a request body (already within its size limit)."""
    if not batch:
        return [payload]
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise DomainError("validation_error", 'The body must be {"events": [...]}')
    events: list[Any] = payload["events"]
    if not events:
        raise DomainError("validation_error", "events is empty")
    if len(events) > MAX_BATCH_EVENTS:
        raise DomainError(
            "payload_too_large", f"{len(events)} events; a batch holds at most {MAX_BATCH_EVENTS}"
        )
    return events
