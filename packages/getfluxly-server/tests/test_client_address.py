"""The client address the per-address rate limits count (api/client_address.py).

Contract: the socket's peer, unless that peer is a trusted proxy (GETFLUXLY_TRUSTED_PROXIES);
then the right-most X-Forwarded-For entry that is not itself a trusted proxy. Entries a
client wrote itself (to the left) are never believed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from getfluxly_server.api.client_address import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "client": (peer, 4711) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address(_scope("203.0.113.9", "198.51.100.1"), ()) == "203.0.113.9"
    assert client_address(_scope(None), ()) == "unknown"


def test_a_request_not_from_a_trusted_proxy_keeps_its_peer() -> None:
    assert client_address(_scope("203.0.113.9", "198.51.100.1"), PROXIES) == "203.0.113.9"


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client wrote "1.2.3.4" itself; the outer proxy (10.0.0.2) saw 198.51.100.1.
    scope = _scope("10.0.0.1", "1.2.3.4, 198.51.100.1, 10.0.0.2")
    assert client_address(scope, PROXIES) == "198.51.100.1"
    # Several header lines are one list, in order.
    scope = _scope("::1", "1.2.3.4", "198.51.100.7")
    assert client_address(scope, PROXIES) == "198.51.100.7"


def test_garbage_in_the_header_falls_back_to_the_proxy() -> None:
    assert client_address(_scope("10.0.0.1", "not-an-address"), PROXIES) == "10.0.0.1"
    assert client_address(_scope("10.0.0.1"), PROXIES) == "10.0.0.1"
