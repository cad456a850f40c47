"""Who is calling: ``Authorization: Bearer <key>`` (or ``?api_key=`` for ingest), checked
against the stored key hashes, and counted against the rate limits, before the body is read.

:class:`GuardedRoute` (every router's routes, see :func:`guard`) authenticates each route
that takes a key (found from its dependencies) from the headers alone and answers 401, 403
or 429 without ever reading the request body, so a client without a valid key cannot make
the server buffer or parse anything. The endpoints' dependencies (:data:`WorkspaceKey`,
:data:`ServerKey`, :data:`IngestKey`) then find the principal already established.

Rate limits (api/ratelimit.py): failed authentications per client address (an address past
its budget is refused before its key is looked up); then a workspace key's requests per
workspace, a server key's per project, a publishable key's per project and client address.
Keys are minted at will, so no bucket is per key: a new key brings no new budget.

Ingest is the hot path, so it authenticates project keys from :class:`KnownKeys`, a cache
of keys this process has already looked up; the transaction that stores the events checks
that the key is still live (``domain.ingest.store_all``), so a revoked key stores nothing
however recently it was cached. Every other endpoint looks its key up each time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, request_response

from getfluxly_server.api.client_address import client_address
from getfluxly_server.api.deps import database, settings
from getfluxly_server.api.ratelimit import Rate, RateLimiter
from getfluxly_server.api.strict_input import check_json_body
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tenancy import Principal, authenticate, hash_key
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database

#: What a route asks of its key: a workspace key, a server key, or a project key for ingest.
Need = Literal["workspace", "secret", "ingest"]


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


_WRONG_KEY = {
    "workspace": "This endpoint takes a workspace key (gf_live_...); project keys are for ingest",
    "secret": "This endpoint takes a project's server key (gflux_secret_...)",
    "ingest": "Events are sent with a project key (gflux_secret_ or gflux_pub_)",
}


def _fits(who: Principal, need: Need) -> bool:
    if need == "ingest":
        return who.kind != "workspace"
    return who.kind == need


async def authenticate_request(request: Request, need: Need) -> Principal:
    """Establish who is calling from the headers (and query) alone: the principal, also
    left on ``request.state`` with the rate-limit headers it earned. Raises
    DomainError(unauthenticated | wrong_key_type | rate_limited)."""
    config = settings(request)
    limiter: RateLimiter = request.app.state.rate_limiter
    address = client_address(request.scope, config.trusted_proxies)
    failures = Rate(config.auth_failure_rate_per_second, config.auth_failure_rate_burst)
    failure_bucket = f"auth-failures:{address}"
    limiter.check(failure_bucket, failures, "this address after failed authentications")
    try:
        token = _token(request, allow_query=need == "ingest")
        if need == "ingest":  # the storing transaction checks the key is still live
            who = await _look_up_cached(request, token)
        else:  # every other endpoint sees a revocation at once
            who = await run_in_threadpool(_look_up, database(request), token)
    except DomainError:
        limiter.spend(failure_bucket, failures)
        raise
    bucket, rate, what = _bucket(who, address, config)
    headers = limiter.take(bucket, rate, what)
    request.state.rate_limit_headers = headers  # error answers carry them too (errors.py)
    if not _fits(who, need):
        raise DomainError("wrong_key_type", _WRONG_KEY[need])
    request.state.principal = who
    return who


def _bucket(who: Principal, address: str, config: Settings) -> tuple[str, Rate, str]:
    """The bucket a principal's request spends from, its rate, and who it limits."""
    if who.kind == "publishable":
        rate = Rate(config.publishable_rate_per_second, config.publishable_rate_burst)
        return f"pub:{who.project_id}:{address}", rate, "this publishable key from this address"
    rate = Rate(config.rate_limit_per_second, config.rate_limit_burst)
    if who.kind == "secret":
        return f"project:{who.project_id}", rate, "this project's server keys"
    return f"workspace:{who.workspace_id}", rate, "this workspace's keys"


async def _look_up_cached(request: Request, token: str) -> Principal:
    """Project keys from :class:`KnownKeys` when seen before (no threadpool hop and no query
    on the ingest path: the storing transaction checks the key is still live); workspace
    keys are looked up every time."""
    known: KnownKeys = request.app.state.known_keys
    who = known.get(token)
    if who is None:
        who = await run_in_threadpool(_look_up, database(request), token)
        if who.kind != "workspace":
            known.add(token, who)
    return who


def _look_up(db: Database, token: str) -> Principal:
    with db.read() as session:
        return authenticate(session, token)


class GuardedRoute(APIRoute):
    """A route that authenticates from the headers before anything reads its body.

    The key a route needs is found from its dependencies (:data:`WorkspaceKey`,
    :data:`ServerKey`, :data:`IngestKey`); a route that needs none is unchanged. A refused
    request raises before FastAPI's handler runs, so its body is never read. A route that
    has a body for FastAPI to parse (the management API) gets it read within the global cap
    and checked strictly (api/strict_input.py) after authentication and before FastAPI
    parses it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        need = _need(self.dependant)
        strict = self.body_field is not None
        if need is None and not strict:
            return handler

        async def guarded(request: Request) -> Response:
            if need is not None:
                await authenticate_request(request, need)
            if strict:
                # Read once: FastAPI's handler gets the same Request and its cached body.
                check_json_body(await request.body())
            return await handler(request)

        return guarded


def guard(router: APIRouter) -> None:
    """Make every plain route of ``router`` a :class:`GuardedRoute`. Call before the router
    is included (FastAPI builds each included route's handler then). Routers declared with
    ``route_class=GuardedRoute`` need not be passed here."""
    for route in router.routes:
        if type(route) is APIRoute:
            route.__class__ = GuardedRoute
            route.app = request_response(route.get_route_handler())


def need_of(route: APIRoute) -> Need | None:
    """The key ``route`` takes (from its dependencies), or None for an open route."""
    return _need(route.dependant)


def _need(dependant: Dependant) -> Need | None:
    for dependency in dependant.dependencies:
        if dependency.call in _NEEDS:
            return _NEEDS[dependency.call]
        found = _need(dependency)
        if found is not None:
            return found
    return None


async def _principal(request: Request, response: Response, need: Need) -> Principal:
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None:  # a route not guarded: authenticate now (its body may have been read)
        who = await authenticate_request(request, need)
    if not _fits(who, need):
        raise DomainError("wrong_key_type", _WRONG_KEY[need])
    response.headers.update(getattr(request.state, "rate_limit_headers", {}))
    return who


async def workspace_key(request: Request, response: Response) -> Principal:
    """Management endpoints: a workspace key (gf_live_) only."""
    return await _principal(request, response, "workspace")


async def server_key(request: Request, response: Response) -> Principal:
    """Server-side project endpoints (alias, erase): a secret key (gflux_secret_) only."""
    return await _principal(request, response, "secret")


async def ingest_key(request: Request, response: Response) -> Principal:
    """Event ingest: a project's server or publishable key, also as ``?api_key=``."""
    return await _principal(request, response, "ingest")


_NEEDS: dict[Callable[..., Any], Need] = {
    workspace_key: "workspace",
    server_key: "secret",
    ingest_key: "ingest",
}

WorkspaceKey = Annotated[Principal, Depends(workspace_key)]
ServerKey = Annotated[Principal, Depends(server_key)]
IngestKey = Annotated[Principal, Depends(ingest_key)]
