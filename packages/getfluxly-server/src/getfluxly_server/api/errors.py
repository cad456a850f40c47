"""The one place where domain error codes become HTTP statuses, and every error is JSON.

Every error body is ``{"error": code, "detail": text}`` (plus optional fields such as
``field``); no traceback, SQL or secret ever reaches a response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from getfluxly_server.domain.errors import DomainError, invalid_input

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
        refusal = invalid_input(exc.errors(), exc.body)
        return error_response(refusal.code, refusal.detail, _rate_headers(request), **refusal.extra)

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
