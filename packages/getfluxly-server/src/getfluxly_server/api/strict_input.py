"""Text the databases cannot store is refused where it enters, the same on both of them.

PostgreSQL refuses NUL (U+0000) in text and lone surrogates (U+D800-DFFF) anywhere, where
SQLite keeps both; left to the INSERT (or to ``str.encode`` on the way to encryption), such
text was a 500 on one database and stored on the other. So:

- :class:`StrictInput` (ASGI middleware): a path holding either is 404 ``not_found`` (no id
  can contain them, so none can exist); a query string that is not UTF-8 or holds NUL is
  400 ``validation_error``.
- :func:`check_json_body`: every route whose body FastAPI parses (the management API) has
  its body (read within the global cap, after authentication: api/auth.GuardedRoute)
  parsed strictly first (orjson: lone surrogates, NaN and Infinity are invalid JSON), and a
  NUL in any key or string is a 400 naming where, as is nesting beyond
  :data:`MAX_BODY_DEPTH` and a whole number beyond 64 bits
  (``-2**63`` to ``2**64 - 1``: what the JSON columns store on both databases; a larger one
  was stored on neither and answered 500). Ingest parses its own bodies with the
  same rules (api/ingest.py, domain/ingest.py).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from getfluxly_server.api.errors import error_response
from getfluxly_server.domain.errors import DomainError

NUL = "\x00"
#: The whole numbers a JSON column holds (orjson's, which both databases' columns use).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: How deep a management body may nest (objects and arrays): far past any real body (the
#: endpoints' own limits, such as 32 for template data, answer first and name the field),
#: and short of where Python's recursion limit turned a body nested 1000 deep into a 500.
MAX_BODY_DEPTH = 512


def has_bad_text(text: str) -> bool:
    """Whether ``text`` holds a NUL or a lone surrogate (what PostgreSQL cannot store)."""
    if NUL in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def nul_path(value: Any, where: str = "") -> str | None:
    """The path (``properties.a.b``) of the first key or string in ``value`` holding NUL."""
    if isinstance(value, str):
        return where or "value" if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if NUL in key:
                return (here.replace(NUL, "\\u0000")) + " (a key)"
            found = nul_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


class StrictInput:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if has_bad_text(scope.get("path", "")):
                response = error_response("not_found", "No such resource")
                await response(scope, receive, send)
                return
            problem = _query_problem(scope.get("query_string", b""))
            if problem is not None:
                await error_response("validation_error", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _query_problem(raw: bytes) -> str | None:
    if not raw:
        return None
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return "The query string is not valid UTF-8 (percent-encode UTF-8 text)"
    for name, value in pairs:
        if NUL in name or NUL in value:
            return f"The query parameter {name.replace(NUL, '')!r} holds a NUL character"
    return None


def check_json_body(body: bytes) -> None:
    """Raise DomainError(validation_error) unless ``body`` is empty or strict JSON with no
    NUL in any key or string (management bodies, before FastAPI parses them)."""
    if not body.strip():
        return
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DomainError("validation_error", f"The body is not valid JSON: {exc}") from None
    if _deeper_than(value, MAX_BODY_DEPTH):
        raise DomainError(
            "validation_error",
            f"The body nests deeper than {MAX_BODY_DEPTH} objects and arrays; no request needs "
            "that many",
        )
    where = nul_path(value)
    if where is not None:
        raise DomainError(
            "validation_error", f"{where}: text may not contain NUL (U+0000) characters"
        )
    if _may_hold_big_integers(value):
        _check_integers(body)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` deep (a walk with a
    list, not recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _may_hold_big_integers(value: Any) -> bool:
    """Whether ``value`` (as orjson read it) holds a number beyond 64 bits: orjson reads a
    whole number that large as a float, so only such floats need a second look. (A walk
    with a list, not recursion: bodies nest as deep as orjson allows.)"""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not INT_MIN <= item <= INT_MAX:
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _check_integers(body: bytes) -> None:
    """DomainError(validation_error) if ``body`` writes a whole number beyond 64 bits (as
    FastAPI reads it: the standard library keeps it whole, and storing it then fails)."""

    def whole(text: str) -> int:
        number = int(text)
        if not INT_MIN <= number <= INT_MAX:
            raise DomainError(
                "validation_error",
                f"The number {text[:30]}{'...' if len(text) > 30 else ''} is too large: whole "
                f"numbers must lie between {INT_MIN} and {INT_MAX} (write a larger one as a "
                "decimal, such as 1e30)",
            )
        return number

    json.loads(body, parse_int=whole)
