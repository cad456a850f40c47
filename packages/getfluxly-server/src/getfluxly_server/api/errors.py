"""The one place where domain error codes become HTTP statuses, and every error is JSON.

Every error body is ``{"error": code, "detail": text}`` (plus optional fields such as
``field``); no traceback, SQL or secret ever reaches a response.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from getfluxly_server.domain.errors import DomainError

log = logging.getLogger("getfluxly.api")

STATUS = {
    "validation_error": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "wrong_key_type": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "timeout": 408,
    "conflict": 409,
    "alias_conflict": 409,
    "erasure_in_progress": 409,
    "payload_too_large": 413,
    "too_early": 425,
    "rate_limited": 429,
    "server_error": 500,
}
#: Provider verification failures: the request was fine, the relay said no (422).
UNPROCESSABLE = 422


def error_response(
    code: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    status = STATUS.get(code, UNPROCESSABLE)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": code, "detail": detail, **extra}, status, headers=headers)


#: Pydantic's wording where a plainer one says what to do.
_MESSAGES = {
    "extra_forbidden": "is not a field of this request (check its spelling)",
    "missing": "is required",
    "json_invalid": "The body is not valid JSON",
    "model_attributes_type": "The body must be a JSON object",
    "model_type": "The body must be a JSON object",
    "dict_type": "The body must be a JSON object",
}


def describe(errors: Sequence[Any], body: Any) -> tuple[str, str | None]:
    """``(detail, field)`` for the first of pydantic's errors: ``"smtp_port: Input should be
    less than or equal to 65535"`` and ``"smtp_port"``.

    Where a body is a tagged union (email providers by ``provider``), pydantic puts the tag in
    the error's location although the client never sent a field of that name: a location
    step that names nothing in the body is left out (unless it is the last, a missing field).
    """
    if not errors:
        return "Invalid request", None
    first = errors[0]
    loc = list(first.get("loc", ()))
    source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else None
    path: list[str] = []
    node = body if source == "body" else None
    for index, step in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, dict) and step not in node and not last:
            continue  # a union tag
        path.append(str(step))
        node = node.get(step) if isinstance(node, dict) else None
    kind = first.get("type", "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path = [*path, "provider"] if isinstance(body, dict) else path
    message = _MESSAGES.get(kind, first.get("msg", "Invalid request"))
    where = ".".join(path)
    if not where or kind in ("json_invalid",):
        return message, None
    return f"{where}: {message}", path[0]


def _rate_headers(request: Request) -> dict[str, str]:
    """The X-RateLimit-* headers the request's key earned (set by api/auth.py), if any."""
    headers: dict[str, str] = getattr(request.state, "rate_limit_headers", {})
    return headers


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        headers = {**_rate_headers(request), **exc.headers}
        return error_response(exc.code, exc.detail, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, field = describe(exc.errors(), exc.body)
        extra = {"field": field} if field else {}
        return error_response("validation_error", detail, _rate_headers(request), **extra)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "server_error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response("server_error", "Something went wrong on our side; it was logged")
