"""A local fake of GetFluxly's ingest API (spec §3), for testing SDKs without the server.

:class:`IngestFake` is a real HTTP server on ``127.0.0.1`` (stdlib :mod:`http.server`, one
thread per request, port chosen by the OS) that answers the way the contract says the real
server answers, so a client that passes against it should pass against the server::

    with IngestFake() as fake:
        client = Client(fake.secret_key, api_host=fake.url)
        client.track("signed_up", external_id="u1")
        client.flush()
        [event] = fake.events
        assert event["event"] == "signed_up"

What it implements (written from the spec, not from any client):

- ``POST /v1/events`` (one event, ≤ ``max_event_bytes``; 202 ``{"accepted": 1,
  "rejected": 0, "request_id"}`` or 400 ``validation_error``) and ``POST /v1/events/batch``
  (``{"events": [...]}``, 1 to ``max_batch_events`` events and ≤ ``max_batch_bytes``, else
  413 ``payload_too_large``; 202 ``{"accepted", "rejected", "errors": [{"index", "error":
  "validation_error", "detail"}], "request_id"}``: valid events are kept, invalid ones listed).
- Auth: ``Authorization: Bearer <key>`` (or ``?api_key=`` on the ingest endpoints) with the
  project's ``secret_key`` or ``publishable_key``; otherwise 401 ``unauthenticated`` with
  ``WWW-Authenticate: Bearer``.
- Per-event rules: ``type`` is ``track`` (default) or ``identify``; ``track`` needs
  ``event``, snake_case and ≤ 64 characters; at least one of ``anonymous_id``,
  ``external_id``, ``user_id`` (strings of 1-255 printable characters); ``properties`` an
  object with ≤ 32 keys; ``traits`` (identify only) and ``context`` objects; nesting at most
  32 levels and no NUL in any key or string; ``timestamp`` and ``sent_at`` ISO-8601 within
  years 1-9999 in UTC; ``message_id`` a UUID; the event ≤ ``max_event_bytes`` as JSON.
  Unknown fields are refused — stricter than a real server may be, so a misspelt field fails
  a test instead of vanishing.
  (``sent_at`` is not in spec §3's field list; it is the SDK contract's clock-skew field.)
- ``X-Idempotency-Key`` on batches: a replay answers the original 202 byte for byte and
  stores nothing again (``replays`` counts them). Events also dedupe on ``message_id``: a
  repeat is acknowledged as accepted and not stored twice (``duplicates`` counts them).
- ``POST /v1/identify/alias`` (secret key only, else 403 ``wrong_key_type``):
  ``{"user_id", "anonymous_id"|"previous_id", "request_id"?}`` → 200 ``{"alias": {...,
  "merged_at"}}``; 409 ``alias_conflict`` when the source id already belongs to another
  profile (:meth:`IngestFake.claim` sets one up).
- Rate limit per key: ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` on every answer and 429
  ``rate_limited`` with ``Retry-After`` past ``rate_limit`` requests per ``rate_window``.
- Errors are ``{"error": code, "detail": text}``; unknown paths 404 ``not_found``, other
  methods 405 ``method_not_allowed``.

Scripted failures, each for the next ``times`` requests (to ``path`` only, if given), oldest
script first: :meth:`~IngestFake.fail_next` (any status: 503, 429 with ``retry_after``, 408,
425...), :meth:`~IngestFake.slow_next` (wait before answering) and
:meth:`~IngestFake.reset_next` (drop the TCP connection with a reset, no answer). With
``after_processing=True`` the request is handled first (its events stored, its idempotent
answer saved) and only then the answer fails: the "stored, but the client never heard" case
that idempotency keys exist for.

Records: ``requests`` (every request, headers in lower case), ``events`` (stored events,
each once, with the fake's ``received_at``), ``aliases``, ``problems`` (why the fake refused
something). ``wait_for_events(n)`` waits for the n-th stored event. ``stop()`` interrupts
scripted delays and joins every thread.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from flux_testkit.httpfake import RESET as _RESET
from flux_testkit.httpfake import FakeService, Request
from flux_testkit.httpfake import Reply as BaseReply

__all__ = ["IngestFake", "Received", "Reply"]

EVENTS_PATH = "/v1/events"
BATCH_PATH = "/v1/events/batch"
ALIAS_PATH = "/v1/identify/alias"
_PATHS = (EVENTS_PATH, BATCH_PATH, ALIAS_PATH)

_EVENT_FIELDS = frozenset(
    {
        "type",
        "event",
        "anonymous_id",
        "external_id",
        "user_id",
        "properties",
        "traits",
        "timestamp",
        "context",
        "message_id",
        "sent_at",
    }
)
_ID_FIELDS = ("anonymous_id", "external_id", "user_id")
_MAX_ID_LENGTH = 255
#: How deep properties, traits and context may nest (the object itself is level 1).
_MAX_DEPTH = 32
_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

#: The status of each error code of spec §3, for scripted failures given only a code.
_CODE_STATUS = {
    "validation_error": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "wrong_key_type": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "timeout": 408,
    "alias_conflict": 409,
    "erasure_in_progress": 409,
    "payload_too_large": 413,
    "too_early": 425,
    "rate_limited": 429,
    "server_error": 500,
}
_STATUS_CODE = {
    400: "validation_error",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "alias_conflict",
    413: "payload_too_large",
    425: "too_early",
    429: "rate_limited",
}


@dataclass(frozen=True)
class Received(Request):
    """One HTTP request as the fake received it."""

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("x-idempotency-key")


@dataclass(frozen=True)
class Reply(BaseReply):
    """What the fake answers."""

    @classmethod
    def error(
        cls, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return cls.json(status, {"error": code, "detail": detail}, {**extra, **(headers or {})})

    def with_headers(self, headers: Mapping[str, str]) -> Reply:
        return Reply(self.status, self.body, {**self.headers, **headers})


@dataclass
class _Scripted:
    kind: Literal["reply", "slow", "reset"]
    reply: Reply | None
    delay: float
    times: int
    path: str | None
    after_processing: bool


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _is_iso8601(value: object) -> bool:
    """An ISO-8601 date-time that stays within years 1-9999 once in UTC."""
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return False
    return True


def _storable_problem(where: str, value: object, depth: int) -> str | None:
    """Why ``value`` cannot be stored: nesting beyond _MAX_DEPTH, or a NUL in a key or string."""
    if isinstance(value, str):
        return f"{where} holds a NUL (U+0000) character" if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    if depth > _MAX_DEPTH:
        return f"{where} nests deeper than {_MAX_DEPTH} levels"
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return f"{where}: a key holds a NUL (U+0000) character"
        nested = depth + 1 if isinstance(item, dict | list) else depth
        problem = _storable_problem(f"{where}.{key}", item, nested)
        if problem is not None:
            return problem
    return None


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class IngestFake(FakeService):
    """The fake ingest server (see the module docstring)."""

    request_type = Received

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        publishable_key: str | None = None,
        max_batch_events: int = 100,
        max_batch_bytes: int = 256 * 1024,
        max_event_bytes: int = 32 * 1024,
        max_property_keys: int = 32,
        rate_limit: int = 100_000,
        rate_window: float = 60.0,
    ) -> None:
        super().__init__()
        self.secret_key = secret_key or f"gflux_secret_{secrets.token_hex(12)}"
        self.publishable_key = publishable_key or f"gflux_pub_{secrets.token_hex(12)}"
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.max_event_bytes = max_event_bytes
        self.max_property_keys = max_property_keys
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._lock = threading.Lock()
        self._stored = threading.Condition(self._lock)
        self._requests: list[Received] = []
        self._events: list[dict[str, Any]] = []
        self._seen_ids: set[str] = set()
        self._idempotent: dict[tuple[str, str], Reply] = {}
        self._aliases: list[dict[str, Any]] = []
        self._owners: dict[tuple[str, str], str] = {}
        self._problems: list[str] = []
        self._script: list[_Scripted] = []
        self._windows: dict[str, tuple[float, int]] = {}
        self.duplicates = 0
        self.replays = 0

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Stored events, oldest first, each message_id once (with ``received_at`` added)."""
        with self._lock:
            return [dict(e) for e in self._events]

    @property
    def aliases(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._aliases]

    @property
    def problems(self) -> list[str]:
        """Why the fake refused requests or events (or crashed), oldest first."""
        with self._lock:
            return list(self._problems)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` events are stored; False on timeout."""
        with self._stored:
            return self._stored.wait_for(lambda: len(self._events) >= count, timeout)

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int | None = None,
        *,
        code: str | None = None,
        detail: str | None = None,
        retry_after: float | str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        times: int = 1,
        path: str | None = None,
        after_processing: bool = False,
    ) -> None:
        """Answer the next ``times`` requests with an error.

        ``status`` and/or ``code``: the other is derived (503 ``server_error``, 429
        ``rate_limited``...). ``retry_after`` becomes a ``Retry-After`` header (a number of
        seconds or an HTTP date). ``body`` replaces the JSON error body (a proxy's HTML page).
        """
        if status is None:
            if code is None:
                raise ValueError("fail_next needs a status or a code")
            status = _CODE_STATUS.get(code, 400)
        code = code or _STATUS_CODE.get(status, "server_error" if status >= 500 else "error")
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = (
                retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
            )
        if body is not None:
            reply = Reply(status, body, extra)
        else:
            reply = Reply.error(status, code, detail or f"scripted {status} {code}", extra)
        with self._lock:
            self._script.append(_Scripted("reply", reply, 0.0, times, path, after_processing))

    def slow_next(
        self,
        seconds: float,
        *,
        times: int = 1,
        path: str | None = None,
        after_processing: bool = False,
    ) -> None:
        """Wait ``seconds`` before handling (or, ``after_processing``, before answering)."""
        with self._lock:
            self._script.append(_Scripted("slow", None, seconds, times, path, after_processing))

    def reset_next(
        self, *, times: int = 1, path: str | None = None, after_processing: bool = False
    ) -> None:
        """Reset the connection instead of answering (before or after handling)."""
        with self._lock:
            self._script.append(_Scripted("reset", None, 0.0, times, path, after_processing))

    def claim(self, source_id: str, user_id: str, *, kind: str = "anonymous_id") -> None:
        """Make ``source_id`` (an ``anonymous_id`` or ``previous_id``) belong to ``user_id``'s
        active profile, so aliasing it to anyone else is an ``alias_conflict``."""
        with self._lock:
            self._owners[(kind, source_id)] = user_id

    # -- handling --------------------------------------------------------------------------

    def _note(self, problem: str) -> None:
        with self._lock:
            self._problems.append(problem)

    def _refuse(self, request: Received, status: int, code: str, detail: str) -> Reply:
        self._note(f"{request.method} {request.path}: {status} {code}: {detail}")
        return Reply.error(status, code, detail)

    def _dispatch(self, request: Received) -> Reply | object | None:
        with self._lock:
            self._requests.append(request)
            scripted = next((s for s in self._script if s.path in (None, request.path)), None)
            if scripted is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    self._script.remove(scripted)
        if scripted is not None and not scripted.after_processing:
            outcome = self._apply(scripted)
            if outcome is not True:
                return outcome
        reply = self._handle(request)
        if scripted is not None and scripted.after_processing:
            outcome = self._apply(scripted)
            if outcome is not True:
                return outcome
        return reply

    def _apply(self, scripted: _Scripted) -> Reply | object | None:
        """The scripted answer; True to go on handling normally, None if stopped."""
        if scripted.kind == "slow":
            return None if self._stopping.wait(scripted.delay) else True
        if scripted.kind == "reset":
            return _RESET
        return scripted.reply

    def _handle(self, request: Received) -> Reply:
        if request.path not in _PATHS:
            return self._refuse(request, 404, "not_found", f"no route {request.path}")
        if request.method != "POST":
            return self._refuse(request, 405, "method_not_allowed", f"{request.method} not allowed")
        key = self._authenticate(request)
        if key is None:
            return self._refuse(request, 401, "unauthenticated", "missing or unknown API key")
        limited, rate_headers = self._rate(key)
        if limited is not None:
            return limited
        if request.path == ALIAS_PATH:
            reply = self._alias(request, key)
        elif request.path == BATCH_PATH:
            reply = self._batch(request)
        else:
            reply = self._single(request)
        return reply.with_headers(rate_headers)

    def _authenticate(self, request: Received) -> str | None:
        header = request.headers.get("authorization", "")
        token: str | None = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        if token is None and request.path != ALIAS_PATH:  # ?api_key= is for ingest only
            values = parse_qs(request.query).get("api_key")
            token = values[0] if values else None
        if token is not None and any(
            # Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
            secrets.compare_digest(token.encode(), key.encode())
            for key in (self.secret_key, self.publishable_key)
        ):
            return token
        return None

    def _rate(self, key: str) -> tuple[Reply | None, dict[str, str]]:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.rate_window:
                start, count = now, 0
            count += 1
            self._windows[key] = (start, count)
        reset = max(start + self.rate_window - now, 0.0)
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(self.rate_limit - count, 0)),
            "X-RateLimit-Reset": str(int(time.time() + reset)),
        }
        if count > self.rate_limit:
            retry = {"Retry-After": str(max(int(reset + 0.999), 1)), **headers}
            return Reply.error(429, "rate_limited", "too many requests", retry), headers
        return None, headers

    def _json_body(self, request: Received) -> Any:
        try:
            return request.json
        except ValueError:
            return _NOT_JSON

    def _single(self, request: Received) -> Reply:
        if len(request.body) > self.max_event_bytes:
            return self._refuse(
                request,
                413,
                "payload_too_large",
                f"event body is {len(request.body)} bytes; the limit is {self.max_event_bytes}",
            )
        data = self._json_body(request)
        problem = self._check_event(data)
        if problem is not None:
            return self._refuse(request, 400, "validation_error", problem)
        with self._lock:
            self._store(data)
        return Reply.json(202, {"accepted": 1, "rejected": 0, "request_id": _request_id()})

    def _batch(self, request: Received) -> Reply:
        if len(request.body) > self.max_batch_bytes:
            return self._refuse(
                request,
                413,
                "payload_too_large",
                f"batch body is {len(request.body)} bytes; the limit is {self.max_batch_bytes}",
            )
        data = self._json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            return self._refuse(request, 400, "validation_error", 'body must be {"events": [...]}')
        if set(data) != {"events"}:
            extra = ", ".join(sorted(set(data) - {"events"}))
            return self._refuse(request, 400, "validation_error", f"unknown fields: {extra}")
        events: list[Any] = data["events"]
        if not events:
            return self._refuse(request, 400, "validation_error", "events must not be empty")
        if len(events) > self.max_batch_events:
            return self._refuse(
                request,
                413,
                "payload_too_large",
                f"{len(events)} events in one batch; the limit is {self.max_batch_events}",
            )
        key = request.idempotency_key
        with self._lock:
            # Under the lock from lookup to store: two attempts of one batch arriving together
            # (a client that timed out and retried) are processed once.
            if key is not None and (request_key := (self._project, key)) in self._idempotent:
                self.replays += 1
                return self._idempotent[request_key]
            errors = []
            accepted = 0
            for index, event in enumerate(events):
                problem = self._check_event(event)
                if problem is None:
                    self._store(event)
                    accepted += 1
                else:
                    errors.append({"index": index, "error": "validation_error", "detail": problem})
                    self._problems.append(f"batch event {index}: {problem}")
            reply = Reply.json(
                202,
                {
                    "accepted": accepted,
                    "rejected": len(errors),
                    "errors": errors,
                    "request_id": _request_id(),
                },
            )
            if key is not None:
                self._idempotent[(self._project, key)] = reply
            return reply

    # Keys are per project; the fake serves one project, whichever of its keys is used.
    _project = "prj_fake"

    def _store(self, event: Mapping[str, Any]) -> None:
        """Keep ``event`` unless its message_id was seen (call with the lock held)."""
        message_id = event.get("message_id") or str(uuid.uuid4())
        if message_id in self._seen_ids:
            self.duplicates += 1
            return
        self._seen_ids.add(message_id)
        self._events.append({**event, "message_id": message_id, "received_at": _now_iso()})
        self._stored.notify_all()

    def _check_event(self, event: Any) -> str | None:
        """Why ``event`` breaks the ingest rules, or None."""
        if event is _NOT_JSON:
            return "body is not JSON"
        if not isinstance(event, dict):
            return "an event must be a JSON object"
        unknown = sorted(set(event) - _EVENT_FIELDS)
        if unknown:
            return f"unknown fields: {', '.join(unknown)}"
        kind = event.get("type", "track")
        if kind not in ("track", "identify"):
            return f"type must be 'track' or 'identify', not {kind!r}"
        name = event.get("event")
        if kind == "track" or name is not None:
            if not isinstance(name, str) or not name:
                return "event is required"
            if len(name) > 64:
                return "event name is longer than 64 characters"
            if not _SNAKE_CASE.fullmatch(name):
                return f"event name {name!r} is not snake_case"
        ids = [event.get(f) for f in _ID_FIELDS]
        for field_name, value in zip(_ID_FIELDS, ids, strict=True):
            if value is not None and (
                not isinstance(value, str)
                or not value.strip()
                or len(value.strip()) > _MAX_ID_LENGTH
                or not value.strip().isprintable()
            ):
                return f"{field_name} must be a string of 1-{_MAX_ID_LENGTH} printable characters"
        if all(v is None for v in ids):
            return "one of anonymous_id, external_id, user_id is required"
        for name_ in ("properties", "traits", "context"):
            if name_ in event and not isinstance(event[name_], dict):
                return f"{name_} must be an object"
            problem = _storable_problem(name_, event.get(name_), 1)
            if problem is not None:
                return problem
        if len(event.get("properties") or {}) > self.max_property_keys:
            return f"properties has more than {self.max_property_keys} keys"
        if event.get("traits") and kind != "identify":
            return "traits belong to identify events"
        for name_ in ("timestamp", "sent_at"):
            if name_ in event and not _is_iso8601(event[name_]):
                return f"{name_} must be an ISO-8601 date-time"
        if "message_id" in event and not _is_uuid(event["message_id"]):
            return "message_id must be a UUID"
        size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
        if size > self.max_event_bytes:
            return f"event is {size} bytes; the limit is {self.max_event_bytes}"
        return None

    def _alias(self, request: Received, key: str) -> Reply:
        if key != self.secret_key:  # already authenticated: which key is no secret
            return self._refuse(
                request, 403, "wrong_key_type", "alias needs a server key (gflux_secret_)"
            )
        data = self._json_body(request)
        if not isinstance(data, dict):
            return self._refuse(request, 400, "validation_error", "body must be a JSON object")
        unknown = sorted(set(data) - {"user_id", "anonymous_id", "previous_id", "request_id"})
        if unknown:
            return self._refuse(
                request, 400, "validation_error", f"unknown fields: {', '.join(unknown)}"
            )
        for name in ("user_id", "anonymous_id", "previous_id", "request_id"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                return self._refuse(
                    request, 400, "validation_error", f"{name} must be a non-empty string"
                )
        user_id = data.get("user_id")
        sources = [(k, data[k]) for k in ("anonymous_id", "previous_id") if data.get(k)]
        if not user_id or not sources:
            return self._refuse(
                request,
                400,
                "validation_error",
                "user_id and one of anonymous_id, previous_id are required",
            )
        with self._lock:
            for kind, source in sources:
                owner = self._owners.get((kind, source))
                if owner is not None and owner != user_id:
                    self._problems.append(f"alias conflict: {kind} {source} belongs to {owner}")
                    return Reply.error(
                        409,
                        "alias_conflict",
                        f"{kind} {source!r} belongs to another active profile",
                    )
            for kind, source in sources:
                self._owners[(kind, source)] = user_id
            alias = {"user_id": user_id, **dict(sources), "merged_at": _now_iso()}
            if data.get("request_id"):
                alias["request_id"] = data["request_id"]
            self._aliases.append(alias)
        return Reply.json(200, {"alias": alias})


#: Stands for a body that did not parse as JSON.
_NOT_JSON = object()


def _request_id() -> str:
    return f"req_{secrets.token_hex(8)}"
