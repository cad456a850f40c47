"""The one place where domain error codes become HTTP statuses, and every error is JSON.

Every error body is ``{"error": code, "detail": text}`` (plus optional fields such as
``field``); no traceback, SQL or secret ever reaches a response.
"""

from __future__ import annotations

import logging
import sqlite3

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sql
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    "invalid_transition": 409,
    "no_provider": 409,
    "not_retryable": 409,
    "profile_erased": 409,
    "template_name_taken": 409,
    "segment_name_taken": 409,
    "payload_too_large": 413,
    "idempotency_key_reused": 422,
    "too_early": 425,
    "rate_limited": 429,
    "server_error": 500,
    "unavailable": 503,
}
#: Seconds a client is asked to wait when the database is busy (503 ``unavailable``).
BUSY_RETRY_AFTER = 2
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


def domain_error_response(request: Request, exc: DomainError) -> JSONResponse:
    headers = {**_rate_headers(request), **exc.headers}
    return error_response(exc.code, exc.detail, headers, **exc.extra)


#: Starlette's own HTTP errors by status: 400 is FastAPI's "the body could not be parsed"
#: (a client error like any other validation_error), 413 a body over the size limit.
_HTTP_CODES = {
    400: "validation_error",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def install(app: FastAPI) -> None:
    """Register the error handlers, and :class:`UnexpectedErrors` as the innermost
    middleware (so CORS headers still wrap its answers)."""
    app.add_middleware(UnexpectedErrors)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = invalid_input(exc.errors(), exc.body)
        return error_response(refusal.code, refusal.detail, _rate_headers(request), **refusal.extra)

    @app.exception_handler(sql.TimeoutError)
    @app.exception_handler(sql.OperationalError)
    async def database_busy(request: Request, exc: Exception) -> JSONResponse:
        if not database_busy_error(exc):
            raise exc  # a real fault: UnexpectedErrors logs it and answers 500
        log.warning("database busy on %s %s: answered 503 (%s)", request.method,
                    request.url.path, type(getattr(exc, "orig", exc)).__name__)  # fmt: skip
        return error_response(
            "unavailable",
            f"The database is busy; nothing was changed. Retry after {BUSY_RETRY_AFTER} s",
            {**_rate_headers(request), "Retry-After": str(BUSY_RETRY_AFTER)},
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "server_error")
        detail = str(exc.detail)
        if exc.status_code == 400:
            detail = f"The body is not valid JSON ({detail})"
        headers = {**_rate_headers(request), **(exc.headers or {})}
        return JSONResponse({"error": code, "detail": detail}, exc.status_code, headers=headers)


def database_busy_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being busy rather than broken: no pooled connection
    came within the pool's timeout, SQLite's write lock was not granted within its busy
    timeout, or PostgreSQL refused or cancelled the work for a lock, a deadlock, a
    serialization conflict or a lost connection. Under heavy load these answered 500;
    the transaction was rolled back, so the request can be retried as it is."""
    if isinstance(exc, sql.TimeoutError):
        return True
    if not isinstance(exc, sql.OperationalError):
        return False
    cause = exc.orig
    if isinstance(cause, sqlite3.OperationalError):
        text = str(cause).lower()
        return "locked" in text or "busy" in text
    return isinstance(cause, psycopg.OperationalError)


class AnswerTracker:
    """An ASGI ``send`` that records whether the answer has started: once it has, a
    middleware may no longer answer in the app's place."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class UnexpectedErrors:
    """Any exception no handler took: logged once, with its traceback, and answered 500
    ``server_error`` (if the answer has not started). It is not raised further, so
    Starlette's outer error middleware and the server do not log it a second (and third)
    time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = AnswerTracker(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not tracked.started:
                response = error_response(
                    "server_error", "Something went wrong on our side; it was logged"
                )
                await response(scope, receive, send)
