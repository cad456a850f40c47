"""Name resolution that fails on this machine, for testing ``dns_failed`` paths.

A lookup of a name that does not exist still sends a query to the configured resolver, which
is off this machine; tests must not do that. Inside :func:`unresolvable_names`, any name
other than ``localhost`` fails at once, as the resolver would say of an unknown name, and IP
literals still work.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock


@contextmanager
def unresolvable_names() -> Iterator[None]:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "localhost":
            return real(host, *args, **kwargs)
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    with mock.patch("socket.getaddrinfo", getaddrinfo):
        yield
