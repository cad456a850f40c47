"""The global request-body cap (``GETFLUXLY_MAX_BODY_BYTES``), enforced as the body arrives.

An ASGI middleware outside every route: a declared ``Content-Length`` over the cap is
answered 413 ``payload_too_large`` before a byte of the body is read; a body without one
(chunked) is counted as its chunks arrive, and the read that passes the cap fails with
:class:`BodyTooLarge` (a 413) instead of handing the chunk on, so no route ever holds more
than the cap in memory. Ingest keeps its own, smaller contract limits (32 KB an event,
256 KB a batch) within this one.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from getfluxly_server.api.errors import AnswerTracker, error_response


class BodyTooLarge(HTTPException):
    """Raised by the receive channel once the body passes the cap (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit))


def _detail(limit: int) -> str:
    return f"The request body exceeds the server's limit of {limit} bytes"


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise BodyTooLarge(self.limit)
            return message

        tracked = AnswerTracker(send)
        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            # Normally the app's error handlers answer it; if it escaped them, answer here.
            if tracked.started:
                raise
            await self._refuse(scope, receive, send)
            return
        if refused and not tracked.started:  # the app swallowed the error and said nothing
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response("payload_too_large", _detail(self.limit))
        # The client may still be sending: tell it this connection is done.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
