"""One provider client per provider per worker process, kept between messages.

Building a client per message would open a connection (and, for SMTP, a TLS handshake and a
login) per message. :class:`ClientCache` keeps each provider's client, keyed by the
provider's id and a version (its ``updated_at``): an edited provider gets a new client the
next time it is used, and its old client is closed (a send still running on it finishes
first). Thread-safe; :meth:`ClientCache.close` at shutdown closes every client.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from getfluxly_server.delivery.base import ProviderClient

#: Clients kept at most; the least recently used is closed beyond it (a busy multi-tenant
#: install has many providers, each holding warm connections).
MAX_CLIENTS = 256


class ClientCache:
    """Provider clients by provider id, each valid for one version of its settings."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, tuple[str, ProviderClient]] = OrderedDict()
        self._closed = False

    def get(
        self, provider_id: str, version: str, build: Callable[[], ProviderClient]
    ) -> ProviderClient:
        """The kept client for this version of the provider, built with ``build()`` if there is
        none (``build`` may raise; nothing is kept then)."""
        retired: list[ProviderClient] = []
        with self._lock:
            kept = self._clients.get(provider_id)
            if kept is not None and kept[0] == version and not self._closed:
                self._clients.move_to_end(provider_id)
                return kept[1]
        # Built outside the lock: building may resolve names or read files, and two threads
        # racing here at worst build twice (the loser's client is closed below).
        client = build()
        with self._lock:
            kept = self._clients.get(provider_id)
            if self._closed:
                retired.append(client)
            elif kept is not None and kept[0] == version:
                retired.append(client)  # another thread won the race: use its client
                client = kept[1]
            else:
                if kept is not None:
                    retired.append(kept[1])
                self._clients[provider_id] = (version, client)
                self._clients.move_to_end(provider_id)
                while len(self._clients) > self.max_clients:
                    retired.append(self._clients.popitem(last=False)[1][1])
        for old in retired:
            old.close()
        return client

    def forget(self, provider_id: str) -> None:
        """Close and drop the provider's client (the provider was deleted)."""
        with self._lock:
            kept = self._clients.pop(provider_id, None)
        if kept is not None:
            kept[1].close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """Close every client; later get() calls build clients that are closed at once."""
        with self._lock:
            self._closed = True
            clients = [client for _, client in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()
