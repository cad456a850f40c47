"""The ingest bodies and answers as the OpenAPI document shows them (documentation only).

Ingest validates by hand on its hot path (domain/ingest.py, from spec/ingest.json); these
JSON Schemas describe the same rules for readers and for generated clients and fuzzers. They
are a strict subset of what the server accepts, never more: a body that matches them is
accepted (the ids, message ids and timestamps are described by simple patterns that cover
the common forms; the server takes any printable id and any ISO-8601 time within range).
Built from the same constants as the validation, so the limits cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from getfluxly_server.domain import identity, ingest

#: Printable ASCII with at least one non-space character (the server takes any printable).
_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": ingest.MAX_ID_LENGTH,
    "pattern": r"^[ -~]*[!-~][ -~]*$",
}
#: Years 1900-2099 and days 1-28 (every month has them): always in range once in UTC.
_TIME = {
    "type": "string",
    "pattern": (
        r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
        r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
        r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"
    ),
    "description": "ISO-8601 with an offset, e.g. 2025-03-01T12:00:00+02:00",
}
#: No NUL in keys or text (PostgreSQL cannot store it).
_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
_KEY = {"pattern": "^[^\\u0000]*$"}
_SCALAR: dict[str, Any] = {
    "anyOf": [
        _TEXT,
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "number", "minimum": -1e300, "maximum": 1e300},
        {"type": "boolean"},
        {"type": "null"},
    ]
}


def _nesting(inner: dict[str, Any]) -> dict[str, Any]:
    """A scalar, or a list or an object of ``inner``."""
    return {
        "anyOf": [
            *_SCALAR["anyOf"],
            {"type": "array", "items": inner},
            {"type": "object", "propertyNames": _KEY, "additionalProperties": inner},
        ]
    }


#: Values nested two levels are described (deeper ones are accepted up to the limit).
_VALUE = _nesting(_nesting(_SCALAR))


def _object(max_keys: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "propertyNames": _KEY,
        "additionalProperties": _VALUE,
    }
    if max_keys is not None:
        schema["maxProperties"] = max_keys
    return schema


_COMMON: dict[str, Any] = {
    **dict.fromkeys(ingest.ID_FIELDS, _ID),
    "timestamp": _TIME,
    "sent_at": {**_TIME, "description": "When the client sent it (corrects its clock)"},
    "context": _object(),
    "message_id": {
        "type": "string",
        "pattern": f"^[A-Za-z0-9_.:-]{{1,{ingest.MAX_MESSAGE_ID}}}$",
        "description": "A UUID; events dedupe on (project, message_id)",
    },
}
_NAME = {
    "type": "string",
    "pattern": ingest.EVENT_NAME.pattern,
    "maxLength": ingest.MAX_EVENT_NAME,
}
_AN_ID = {"anyOf": [{"required": [field]} for field in ingest.ID_FIELDS]}

TRACK: dict[str, Any] = {
    "title": "Track",
    "type": "object",
    "properties": {
        "event": _NAME,
        "type": {"type": "string", "enum": ["track"]},
        "properties": _object(ingest.MAX_PROPERTIES),
        **_COMMON,
    },
    "required": ["event"],
    "additionalProperties": False,
    **_AN_ID,
}
IDENTIFY: dict[str, Any] = {
    "title": "Identify",
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["identify"]},
        "event": _NAME,
        "traits": _object(),
        "properties": _object(ingest.MAX_PROPERTIES),
        **_COMMON,
    },
    "required": ["type"],
    "additionalProperties": False,
    **_AN_ID,
}
EVENT: dict[str, Any] = {
    "description": (
        f"A track or identify event; at most {ingest.MAX_EVENT_BYTES} bytes as JSON, "
        f"properties, traits and context nesting at most {ingest.MAX_DEPTH} levels"
    ),
    "oneOf": [TRACK, IDENTIFY],
}
BATCH: dict[str, Any] = {
    "type": "object",
    "description": f"At most {ingest.MAX_BATCH_BYTES} bytes",
    "properties": {
        "events": {
            "type": "array",
            "items": EVENT,
            "minItems": 1,
            "maxItems": ingest.MAX_BATCH_EVENTS,
        }
    },
    "required": ["events"],
    "additionalProperties": False,
}


ALIAS: dict[str, Any] = {
    "type": "object",
    "description": "Attach an anonymous id (or a previous id) to a profile",
    "properties": {
        "user_id": {**_ID, "description": "The GetFluxly profile id"},
        "anonymous_id": _ID,
        "previous_id": _ID,
        "request_id": _ID,
    },
    "required": ["user_id"],
}
ERASE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "enum": list(identity.ERASE_REASONS)},
        "request_id": _ID,
    },
    "required": ["reason"],
}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``schema``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class EventError(BaseModel):
    index: int
    error: str = Field(description="validation_error")
    detail: str


class Accepted(BaseModel):
    """The answer to POST /v1/events."""

    accepted: int
    rejected: int
    request_id: str


class BatchAccepted(Accepted):
    """The answer to POST /v1/events/batch: bad events by index, the others stored."""

    errors: list[EventError]
