"""The error answers each operation can give, written into the OpenAPI document.

Every error has one shape, ``{"error": code, "detail": text}`` (api/errors.py), so one model
describes them all; which statuses an operation lists follows from what it takes: a key
(401, 403, 429), a body (400, 413, 422), path parameters (404), query parameters (400);
every one may answer 503 when the database is busy.
FastAPI's own 422 (its validation-error shape, which this server never sends: bad input is a
400 here) is replaced by the real one. Documented on each router before it is included, next
to :func:`api.auth.guard`; answers an endpoint documents itself are kept.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from getfluxly_server.api.auth import need_of


class ErrorBody(BaseModel):
    """Every error answer (some add fields, such as ``field``, naming what was wrong)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable code: validation_error, unauthenticated, ...")
    detail: str = Field(description="What was wrong and what to do, for a person")


_MEANING = {
    400: "validation_error: the request is malformed or breaks a rule; detail says which",
    401: "unauthenticated: no key, or an unknown or revoked one",
    403: "wrong_key_type: this endpoint takes another kind of key",
    404: "not_found: no such resource in this key's workspace or project (or an endpoint "
    "this server does not offer, such as dev mode's outside dev mode)",
    413: "payload_too_large: the body is over the limit",
    422: "The request was understood but refused (e.g. the relay refused the login, or an "
    "idempotency key was reused with a different body); error names why",
    429: "rate_limited: over the rate limit; Retry-After says when to try again",
    503: "unavailable: the database is busy (under heavy load); nothing was changed, retry "
    "after Retry-After",
}


def _error(status: int) -> dict[str, Any]:
    return {"model": ErrorBody, "description": _MEANING[status]}


def document_errors(router: APIRouter) -> None:
    """Add the error answers each route of ``router`` can give to its ``responses``."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            for status in _statuses(route):
                route.responses.setdefault(status, _error(status))


def _statuses(route: APIRoute) -> list[int]:
    statuses = []
    keyed = need_of(route) is not None
    takes_body = route.body_field is not None or bool((route.methods or set()) & {"POST", "PATCH"})
    if keyed:
        statuses += [401, 403, 429]
    if takes_body or route.dependant.query_params:
        statuses.append(400)
    if route.dependant.path_params or keyed:  # keyed: also endpoints that are off (dev mode)
        statuses.append(404)
    if takes_body:
        statuses += [413, 422]
    elif route.dependant.path_params or route.dependant.query_params:
        statuses.append(422)  # replaces FastAPI's own, never sent: see the module docstring
    statuses.append(503)  # any route that reads the database (api/errors.database_busy)
    return sorted(statuses)
