"""Who is calling: ``Authorization: Bearer <key>`` (or ``?api_key=`` for ingest), checked
against the stored key hashes, and counted against the key's rate limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from getfluxly_server.api.deps import database
from getfluxly_server.api.ratelimit import RateLimiter
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tenancy import Principal, authenticate
from getfluxly_server.storage.db import Database


def _token(request: Request, *, allow_query: bool) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_query and (query := request.query_params.get("api_key")):
        return query.strip()
    raise DomainError("unauthenticated", "Send your API key as 'Authorization: Bearer <key>'")


def _identify(
    request: Request, response: Response, db: Database, *, allow_query: bool
) -> Principal:
    token = _token(request, allow_query=allow_query)
    with db.read() as session:
        who = authenticate(session, token)
    limiter: RateLimiter = request.app.state.rate_limiter
    headers = limiter.take(who.key_id)
    response.headers.update(headers)
    request.state.rate_limit_headers = headers  # error answers carry them too (errors.py)
    return who


def principal(
    request: Request, response: Response, db: Annotated[Database, Depends(database)]
) -> Principal:
    return _identify(request, response, db, allow_query=False)


def workspace_key(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """Management endpoints: a workspace key (gf_live_) only."""
    if who.kind != "workspace":
        raise DomainError(
            "wrong_key_type",
            "This endpoint takes a workspace key (gf_live_...); project keys are for ingest",
        )
    return who


def server_key(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """Server-side project endpoints (alias, erase): a secret key (gflux_secret_) only."""
    if who.kind != "secret":
        raise DomainError(
            "wrong_key_type", "This endpoint takes a project's server key (gflux_secret_...)"
        )
    return who


def ingest_key(
    request: Request, response: Response, db: Annotated[Database, Depends(database)]
) -> Principal:
    """Event ingest: a project's server or publishable key, also as ``?api_key=``."""
    who = _identify(request, response, db, allow_query=True)
    if who.kind == "workspace":
        raise DomainError(
            "wrong_key_type", "Events are sent with a project key (gflux_secret_ or gflux_pub_)"
        )
    return who


WorkspaceKey = Annotated[Principal, Depends(workspace_key)]
ServerKey = Annotated[Principal, Depends(server_key)]
IngestKey = Annotated[Principal, Depends(ingest_key)]
