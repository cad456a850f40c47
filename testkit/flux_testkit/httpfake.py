"""The HTTP plumbing the local API fakes share: a threaded server on 127.0.0.1 that joins its
request threads on close and stays quiet when a client gives up."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Notes(Protocol):
    """What a fake offers the server: a place to record what went wrong."""

    def _note(self, text: str) -> None: ...


class FakeHTTPServer(ThreadingHTTPServer):
    # Join request threads on close (the fake's stop() first interrupts scripted delays), so
    # nothing outlives the fake.
    daemon_threads = False
    block_on_close = True

    def __init__(self, fake: Notes, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.notes = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return  # the client gave up (a timeout test); nothing to report
        self.notes._note(f"fake crashed: {exc!r}")
        super().handle_error(request, client_address)
