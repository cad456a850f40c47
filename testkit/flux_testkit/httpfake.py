"""What the local API fakes share: the request and reply records, a threaded server on
127.0.0.1 that joins its request threads on close and stays quiet when a client gives up,
the handler that turns an HTTP exchange into ``fake._dispatch(request)``, and the lifecycle
(start, stop, context manager, port, url).

A fake subclasses :class:`FakeService`, names its request record (a :class:`Request`
subclass) in ``request_type`` and implements ``_dispatch`` (a :class:`Reply`, :data:`RESET`
to reset the connection, or None to answer nothing) and ``_note`` (record a problem).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """One HTTP request as a fake received it."""

    method: str
    #: The path without the query string, as sent (percent-encoded).
    path: str
    query: str
    #: Header names in lower case (a repeated header keeps its last value).
    headers: Mapping[str, str]
    body: bytes
    #: ``time.monotonic()`` when it arrived.
    at: float

    @property
    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What a fake answers."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> Self:
        return cls(
            status,
            json.dumps(data).encode("utf-8"),
            {"Content-Type": "application/json", **(headers or {})},
        )


#: Returned by ``_dispatch`` to mean "reset the connection, answer nothing".
RESET = object()


class FakeService:
    """Base of the fakes: the server's lifecycle and the dispatch of requests (module doc)."""

    request_type: ClassVar[type[Request]] = Request

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _dispatch(self, request: Any) -> Reply | object | None:
        raise NotImplementedError

    def _note(self, problem: str) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping.clear()
        self._server = FakeHTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; interrupts delays, joins every thread, closes every socket."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"


class FakeHTTPServer(ThreadingHTTPServer):
    # Join request threads on close (the fake's stop() first interrupts scripted delays), so
    # nothing outlives the fake.
    daemon_threads = False
    block_on_close = True

    def __init__(self, fake: FakeService) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return  # the client gave up (a timeout test); nothing to report
        self.fake._note(f"fake crashed: {exc!r}")
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: FakeHTTPServer
    # HTTP/1.0: one request per connection, so no idle keep-alive connection can hold a
    # request thread (and stop()) hostage.
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        fake = self.server.fake
        request = fake.request_type(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        reply = fake._dispatch(request)
        if reply is None:
            return  # stopped while delaying: answer nothing
        if reply is RESET:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client
            # sees "connection reset", not a clean (if empty) end of stream.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.wfile.close()
            self.rfile.close()
            self.connection.close()
            # http.server flushes wfile after this method returns: give it a harmless sink
            # (a closed file would raise, and count as the fake crashing).
            self.wfile = io.BytesIO()
            self.close_connection = True
            return
        assert isinstance(reply, Reply)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    # The names http.server dispatches to.
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests instead
