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
  NUL in any key or string is a 400 naming where. Ingest parses its own bodies with the
  same rules (api/ingest.py, domain/ingest.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from getfluxly_server.api.errors import error_response
from getfluxly_server.domain.errors import DomainError

NUL = "\x00"


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
    where = nul_path(value)
    if where is not None:
        raise DomainError(
            "validation_error", f"{where}: text may not contain NUL (U+0000) characters"
        )
