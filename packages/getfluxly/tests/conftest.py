"""Fixtures for the SDK's tests: the ingest fake and clients pointed at it.

Clients made by ``make_client``/``make_async_client`` are shut down when the test ends, before
the fake stops. ``record_sleeps(client)`` replaces a client's wait between retries with one
that records the delay the retry policy chose and returns at once, so retry tests assert on
the policy's decisions without waiting them out.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from flux_testkit.ingest_fake import IngestFake
from getfluxly import AsyncClient, Client, GFluxError


@pytest.fixture
def ingest() -> Iterator[IngestFake]:
    with IngestFake() as fake:
        yield fake


class Errors(list[GFluxError]):
    """An ``on_error`` callback that keeps what it was given."""

    def __call__(self, error: GFluxError) -> None:
        self.append(error)

    @property
    def message_ids(self) -> list[str]:
        return [m for e in self for m in e.details.get("message_ids", [])]


@pytest.fixture
def errors() -> Errors:
    return Errors()


@pytest.fixture
def make_client(ingest: IngestFake, errors: Errors) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def factory(**options: Any) -> Client:
        token = options.pop("token", ingest.secret_key)
        options.setdefault("api_host", ingest.url)
        options.setdefault("on_error", errors)
        client = Client(token, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.shutdown(timeout=5)


@pytest.fixture
async def make_async_client(
    ingest: IngestFake, errors: Errors
) -> AsyncIterator[Callable[..., AsyncClient]]:
    made: list[AsyncClient] = []

    def factory(**options: Any) -> AsyncClient:
        token = options.pop("token", ingest.secret_key)
        options.setdefault("api_host", ingest.url)
        options.setdefault("on_error", errors)
        client = AsyncClient(token, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.shutdown(timeout=5)


def record_sleeps(client: Client | AsyncClient) -> list[float]:
    """Make ``client`` retry without waiting; the delays its policy chose, in order."""
    delays: list[float] = []
    if isinstance(client, Client):

        def sleep(seconds: float) -> bool:
            delays.append(seconds)
            return False

        client._sleep = sleep
    else:

        async def asleep(seconds: float) -> None:
            delays.append(seconds)

        client._sleep = asleep
    return delays


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
