"""Who is calling: ``Authorization: Bearer <key>``, checked against the stored key hashes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from getfluxly_server.api.deps import database
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tenancy import Principal, authenticate
from getfluxly_server.storage.db import Database


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("unauthenticated", "Send your API key as 'Authorization: Bearer <key>'")
    return token.strip()


def principal(request: Request, db: Annotated[Database, Depends(database)]) -> Principal:
    token = _bearer(request)
    with db.read() as session:
        return authenticate(session, token)


def workspace_key(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """Management endpoints: a workspace key (gf_live_) only."""
    if who.kind != "workspace":
        raise DomainError(
            "wrong_key_type",
            "This endpoint takes a workspace key (gf_live_...); project keys are for ingest",
        )
    return who


WorkspaceKey = Annotated[Principal, Depends(workspace_key)]
