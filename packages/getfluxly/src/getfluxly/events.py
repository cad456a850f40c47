"""Building and validating event payloads on the client, before they are queued.

Everything the ingest contract (spec §3) lets the client check is checked here, so a mistake
raises ``GFluxError(code="validation_error")`` from ``track()``/``identify()`` in the caller's
stack instead of being dropped later by the server:

- event names are snake_case (``signed_up``: lowercase letters and digits in words joined by
  single underscores, starting with a letter), at most 64 characters;
- at least one of ``anonymous_id``, ``external_id``, ``user_id``, each a string of 1-255
  printable characters (an ``int`` is accepted and sent as its decimal string, for database
  primary keys);
- ``properties``, ``traits`` and ``context`` are mappings with string keys; at most 32
  property keys; nesting at most 32 levels; no NUL (U+0000) in any key or string (the
  server's database cannot store it);
- ``timestamp`` is an aware ``datetime`` or an ISO-8601 string with a UTC offset (a naive time
  is ambiguous: the server cannot know which timezone it meant), within years 1-9999 in UTC;
  default: now;
- values are JSON: ``datetime``/``date``/``time`` become ISO-8601 strings, ``UUID`` a string,
  ``Decimal`` a float, tuples lists; anything else (sets, objects, NaN) is refused;
- the event encodes to at most :data:`MAX_EVENT_BYTES`, ``sent_at`` included.

An event is encoded once, when it is queued (compact UTF-8 JSON), so later changes to the
caller's dicts cannot change what is sent. ``sent_at`` (when the batch was first sent, in UTC)
is spliced in front when its batch is built (:func:`stamp_sent_at`); the server uses
``received_at - sent_at`` to correct the client's clock skew in ``timestamp``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from getfluxly._version import __version__
from getfluxly.errors import GFluxError

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "MAX_EVENT_NAME_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_PROPERTY_KEYS",
    "SENT_AT_OVERHEAD",
    "EncodedEvent",
    "build_identify",
    "build_track",
    "encode",
    "format_sent_at",
    "stamp_sent_at",
]

MAX_EVENT_NAME_LENGTH = 64
MAX_PROPERTY_KEYS = 32
MAX_ID_LENGTH = 255
#: How deep properties, traits and context may nest (the mapping itself is level 1).
MAX_DEPTH = 32
#: Spec: "body ≤ 32 KB". Whether the server counts KB as 1000 or 1024 bytes is not written
#: down, so the client uses the smaller reading: an event refused at ``track()`` is a clear
#: error, one refused by the server is a lost event.
MAX_EVENT_BYTES = 32_000

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_ID_FIELDS = ("anonymous_id", "external_id", "user_id")
#: ``sent_at`` is always formatted to this many characters (microseconds included), so the
#: size of a stamped event is known exactly when it is queued.
_SENT_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SENT_AT_LENGTH = len("2000-01-01T00:00:00.000000Z")
#: Bytes that :func:`stamp_sent_at` adds to an encoded event.
SENT_AT_OVERHEAD = len(b'"sent_at":"",') + _SENT_AT_LENGTH


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """One validated event: its ``message_id`` and its JSON without ``sent_at``."""

    message_id: str
    data: bytes

    @property
    def size(self) -> int:
        """Bytes this event takes in a request body, ``sent_at`` included."""
        return len(self.data) + SENT_AT_OVERHEAD

    def as_dict(self) -> dict[str, Any]:
        """The event as a dict (for error reports)."""
        value: dict[str, Any] = json.loads(self.data)
        return value


def _invalid(message: str, **details: Any) -> GFluxError:
    return GFluxError(message, code="validation_error", details=details)


def _suggest_name(name: str) -> str:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return "_".join(w for w in re.split(r"[^a-z0-9]+", words.lower()) if w)


def check_event_name(name: object) -> str:
    if not isinstance(name, str):
        raise _invalid(f"event name must be a string, not {type(name).__name__}")
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise _invalid(
            f"event name is {len(name)} characters long; the limit is {MAX_EVENT_NAME_LENGTH}",
            field="event",
        )
    if not _SNAKE_CASE.fullmatch(name):
        hint = _suggest_name(name)
        raise _invalid(
            f"event name {name!r} is not snake_case (lowercase letters and digits in words "
            "joined by single underscores, starting with a letter)"
            + (f"; did you mean {hint!r}?" if _SNAKE_CASE.fullmatch(hint or "-") else ""),
            field="event",
        )
    return name


def _check_ids(ids: Mapping[str, object]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for field, value in ids.items():
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _invalid(f"{field} must be a string, not {type(value).__name__}", field=field)
        if not value.strip():
            raise _invalid(f"{field} must not be empty", field=field)
        if len(value.strip()) > MAX_ID_LENGTH or not value.strip().isprintable():
            raise _invalid(f"{field} must be 1-{MAX_ID_LENGTH} printable characters", field=field)
        checked[field] = value
    if not checked:
        raise _invalid(
            "at least one of anonymous_id, external_id, user_id is required", field="ids"
        )
    return checked


def _check_mapping(field: str, value: object, *, max_keys: int | None = None) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{field} must be a mapping, not {type(value).__name__}", field=field)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _invalid(f"{field} keys must be strings; got {bad[0]!r}", field=field)
    if max_keys is not None and len(value) > max_keys:
        raise _invalid(f"{field} has {len(value)} keys; the limit is {max_keys}", field=field)
    _check_storable(field, value, 1)
    return dict(value)


def _check_storable(where: str, value: object, depth: int) -> None:
    """Nesting within MAX_DEPTH and no NUL in any key or string (the server refuses both)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _invalid(f"{where} holds a NUL (U+0000) character", field=where.split(".")[0])
        return
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return
    if depth > MAX_DEPTH:
        raise _invalid(f"{where} nests deeper than {MAX_DEPTH} levels", field=where.split(".")[0])
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            raise _invalid(f"{where}: a key holds a NUL (U+0000) character", field=where)
        if isinstance(item, Mapping | list | tuple):
            _check_storable(f"{where}.{key}", item, depth + 1)
        else:
            _check_storable(f"{where}.{key}", item, depth)


def check_timestamp(value: object) -> str:
    """``value`` as an ISO-8601 string with its UTC offset (``None``: now, in UTC)."""
    if value is None:
        return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(
                f"timestamp {value!r} is not ISO-8601 (e.g. '2025-01-31T09:30:00+00:00')",
                field="timestamp",
            ) from None
    elif isinstance(value, dt.datetime):
        parsed = value
    else:
        raise _invalid(
            "timestamp must be a timezone-aware datetime or an ISO-8601 string, "
            f"not {type(value).__name__}",
            field="timestamp",
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _invalid(
            f"timestamp {value!s} has no timezone; pass an aware datetime "
            "(datetime.now(timezone.utc)) or a string with an offset ('...Z', '...+02:00')",
            field="timestamp",
        )
    try:
        parsed.astimezone(dt.UTC)
    except OverflowError:
        raise _invalid(
            f"timestamp {value!s} is outside years 1-9999 once in UTC", field="timestamp"
        ) from None
    return parsed.isoformat(timespec="microseconds")


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; raises ``validation_error`` for values that are not JSON."""
    try:
        text = json.dumps(
            payload,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        reason = "NaN and infinities are not JSON" if "Out of range" in str(exc) else str(exc)
        raise _invalid(f"event is not JSON-serializable: {reason}") from None
    return text.encode("utf-8")


def _finish(payload: dict[str, Any]) -> EncodedEvent:
    data = encode(payload)
    event = EncodedEvent(payload["message_id"], data)
    if event.size > MAX_EVENT_BYTES:
        raise _invalid(
            f"event is {event.size} bytes as JSON; the limit is {MAX_EVENT_BYTES}",
            size=event.size,
        )
    return event


def _library_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    # The caller's keys win; the library entry tells the server which SDK sent the event.
    return {"library": {"name": "getfluxly-python", "version": __version__}, **(context or {})}


def build_track(
    event: object,
    *,
    anonymous_id: object = None,
    external_id: object = None,
    user_id: object = None,
    properties: object = None,
    timestamp: object = None,
    context: object = None,
) -> EncodedEvent:
    """A validated ``track`` event (see the module docstring for the rules)."""
    payload: dict[str, Any] = {
        "type": "track",
        "event": check_event_name(event),
        "message_id": str(uuid.uuid4()),
        "timestamp": check_timestamp(timestamp),
        **_check_ids(
            {"anonymous_id": anonymous_id, "external_id": external_id, "user_id": user_id}
        ),
    }
    if properties is not None:
        payload["properties"] = _check_mapping("properties", properties, max_keys=MAX_PROPERTY_KEYS)
    ctx = None if context is None else _check_mapping("context", context)
    payload["context"] = _library_context(ctx)
    return _finish(payload)


def build_identify(
    *,
    anonymous_id: object = None,
    external_id: object = None,
    user_id: object = None,
    traits: object = None,
) -> EncodedEvent:
    """A validated ``identify`` event: an event with ``"type": "identify"`` and ``traits``.

    It carries no ``event`` name (spec §3 describes identify by its type and traits only).
    """
    payload: dict[str, Any] = {
        "type": "identify",
        "message_id": str(uuid.uuid4()),
        "timestamp": check_timestamp(None),
        **_check_ids(
            {"anonymous_id": anonymous_id, "external_id": external_id, "user_id": user_id}
        ),
        "traits": {} if traits is None else _check_mapping("traits", traits),
        "context": _library_context(None),
    }
    return _finish(payload)


def format_sent_at(when: dt.datetime | None = None) -> str:
    """``when`` (default now) in UTC, always :data:`_SENT_AT_LENGTH` characters long."""
    when = dt.datetime.now(dt.UTC) if when is None else when.astimezone(dt.UTC)
    return when.strftime(_SENT_AT_FORMAT)


def stamp_sent_at(data: bytes, sent_at: str) -> bytes:
    """``data`` (an encoded event, a JSON object) with ``"sent_at"`` as its first field."""
    if len(sent_at) != _SENT_AT_LENGTH or not data.startswith(b"{"):
        raise ValueError("stamp_sent_at takes an encoded event and a format_sent_at() value")
    # Every encoded event has fields (at least "type"), so "{" is followed by one and the
    # comma is right.
    return b'{"sent_at":"' + sent_at.encode("ascii") + b'",' + data[1:]
