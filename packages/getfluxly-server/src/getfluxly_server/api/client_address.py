"""Who is on the other end: the client address the per-address rate limits count.

By default the address is the socket's peer, and ``X-Forwarded-For`` is ignored: anyone can
write that header, so believing it would let every request claim a fresh address (a fresh
rate-limit budget). An operator who runs GetFluxly behind a reverse proxy or load balancer
lists it in ``GETFLUXLY_TRUSTED_PROXIES`` (addresses or networks); then, for a request whose
peer is one of them, the client is the right-most ``X-Forwarded-For`` entry that is not a
trusted proxy itself (entries to its left were written by the client and prove nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

from getfluxly_server.settings import IPNetwork

UNKNOWN = "unknown"


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str:
    """The client's address as text (``unknown`` when the server was given none)."""
    client = scope.get("client")
    peer = str(client[0]) if client else UNKNOWN
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    ]
    hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return _parsed(hop) or peer
    return hops[0] if hops and _parsed(hops[0]) else peer


def _parsed(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _trusted(text: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in trusted)
