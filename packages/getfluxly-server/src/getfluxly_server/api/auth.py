"""Who is calling: ``Authorization: Bearer <key>`` (or ``?api_key=`` for ingest), checked
against the stored key hashes, and counted against the key's rate limit.

Ingest is the hot path, so it authenticates project keys from :class:`KnownKeys`, a cache
of keys this process has already looked up; the transaction that stores the events checks
that the key is still live (``domain.ingest.store_all``), so a revoked key stores nothing
however recently it was cached. Every other endpoint looks its key up each time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from getfluxly_server.api.deps import database
from getfluxly_server.api.ratelimit import RateLimiter
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tenancy import Principal, authenticate, hash_key
from getfluxly_server.storage.db import Database


class KnownKeys:
    """Principals of project keys by key hash, the ``size`` most recently used.

    Only project keys are kept: a key's kind, workspace and project never change, and
    whether it is still live is checked where it matters (see the module docstring). Used
    from the event loop only, so it needs no lock.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._keys: OrderedDict[str, Principal] = OrderedDict()

    def get(self, token: str) -> Principal | None:
        digest = hash_key(token)
        who = self._keys.get(digest)
        if who is not None:
            self._keys.move_to_end(digest)
        return who

    def add(self, token: str, who: Principal) -> None:
        self._keys[hash_key(token)] = who
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)


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
    who = _look_up(db, _token(request, allow_query=allow_query))
    _count(request, response, who)
    return who


def _count(request: Request, response: Response, who: Principal) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    headers = limiter.take(who.key_id)
    response.headers.update(headers)
    request.state.rate_limit_headers = headers  # error answers carry them too (errors.py)


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


async def ingest_key(request: Request, response: Response) -> Principal:
    """Event ingest: a project's server or publishable key, also as ``?api_key=``.

    Async, and from :class:`KnownKeys` when the key has been seen: no threadpool hop and
    no query on the hot path (the storing transaction checks the key is still live).
    """
    token = _token(request, allow_query=True)
    known: KnownKeys = request.app.state.known_keys
    who = known.get(token)
    if who is None:
        who = await run_in_threadpool(_look_up, database(request), token)
        if who.kind != "workspace":
            known.add(token, who)
    _count(request, response, who)
    if who.kind == "workspace":
        raise DomainError(
            "wrong_key_type", "Events are sent with a project key (gflux_secret_ or gflux_pub_)"
        )
    return who


def _look_up(db: Database, token: str) -> Principal:
    with db.read() as session:
        return authenticate(session, token)


WorkspaceKey = Annotated[Principal, Depends(workspace_key)]
ServerKey = Annotated[Principal, Depends(server_key)]
IngestKey = Annotated[Principal, Depends(ingest_key)]
