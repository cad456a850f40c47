"""The SDK's one exception type, :class:`GFluxError`, and how server answers become one.

Codes the server sends (``{"error": code, "detail": text}``) are passed through unchanged, so
``except GFluxError as e: if e.code == "alias_conflict"`` reads like the API reference. Codes
the SDK makes itself:

- ``validation_error``: an argument of ``track()``/``identify()``/``alias()`` breaks the ingest
  contract (raised at once, nothing is queued); the same code the server uses.
- ``queue_overflow``: ``max_queue_size`` events are already waiting (the server is down or
  slow); retryable.
- ``client_closed``: the client was shut down.
- ``network_error`` / ``timeout``: no HTTP answer (connection refused or reset, DNS, TLS; no
  answer within ``timeout`` seconds); retryable.
- ``shutdown_timeout``: events still queued (or, for the async client, in flight) when
  ``shutdown(timeout=...)`` ran out of time (only ever passed to ``on_error``).
- ``sdk_error``: a bug in the SDK while sending a batch (only ever passed to ``on_error``,
  with the batch's events, and logged with its traceback).
- An HTTP error whose body is not the documented JSON gets the code of its status (see
  :data:`STATUS_CODES`), or ``http_error``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RETRYABLE_STATUSES",
    "STATUS_CODES",
    "GFluxError",
    "error_from_reply",
    "is_retryable_status",
]

#: Statuses worth sending again unchanged (spec §4): timeouts, too early, rate limited and
#: every 5xx. Everything else (400, 401, 403, 404, 409, 413, ...) fails the same way twice.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

#: The code of an error status when the body does not carry one (a proxy's HTML page, say).
STATUS_CODES: Mapping[int, str] = {
    400: "validation_error",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    425: "too_early",
    429: "rate_limited",
}


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


class GFluxError(Exception):
    """An error from the GetFluxly SDK or server.

    - ``code``: a stable machine-readable code (the server's ``error`` field, or one of the
      SDK's own codes listed in :mod:`getfluxly.errors`).
    - ``message``: human-readable text (the server's ``detail``).
    - ``retryable``: whether the same request may succeed later (408/425/429/5xx, network
      errors, a full queue).
    - ``retry_after_ms``: the server's ``Retry-After`` in milliseconds, when it sent one.
    - ``details``: extra data, e.g. ``status`` (HTTP status), ``request_id``, and for events
      that were dropped ``message_ids`` and ``events`` (the event dicts, so they can be kept).
    """

    code: str
    message: str
    retryable: bool
    retry_after_ms: int | None
    details: dict[str, Any]

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retryable: bool = False,
        retry_after_ms: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.details = dict(details or {})

    @property
    def status(self) -> int | None:
        """The HTTP status that caused this error, if there was one."""
        status = self.details.get("status")
        return status if isinstance(status, int) else None

    def with_details(self, **extra: Any) -> GFluxError:
        """A copy of this error with ``extra`` merged into ``details``."""
        return GFluxError(
            self.message,
            code=self.code,
            retryable=self.retryable,
            retry_after_ms=self.retry_after_ms,
            details={**self.details, **extra},
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"GFluxError(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default Exception pickling (multiprocessing,
        # task queues): rebuild through a helper.
        return (
            _rebuild,
            (self.message, self.code, self.retryable, self.retry_after_ms, self.details),
        )


def _rebuild(
    message: str,
    code: str,
    retryable: bool,
    retry_after_ms: int | None,
    details: dict[str, Any],
) -> GFluxError:
    return GFluxError(
        message, code=code, retryable=retryable, retry_after_ms=retry_after_ms, details=details
    )


def error_from_reply(
    status: int, body: bytes, *, retry_after: float | None = None, **extra: Any
) -> GFluxError:
    """The :class:`GFluxError` for an HTTP error answer (``status`` ≥ 300).

    Uses the body's ``{"error", "detail"}`` when it has them; any other fields of the body
    (``field``, ``request_id``...) go into ``details``.
    """
    code = STATUS_CODES.get(status, "server_error" if status >= 500 else "http_error")
    message = f"HTTP {status}"
    details: dict[str, Any] = {"status": status}
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("error"), str) and data["error"]:
            code = data["error"]
        if isinstance(data.get("detail"), str) and data["detail"]:
            message = data["detail"]
        details.update({k: v for k, v in data.items() if k not in ("error", "detail")})
    elif body:
        # Not our JSON (a proxy or load balancer answered): keep a little for debugging.
        message = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    details.update(extra)
    return GFluxError(
        message,
        code=code,
        retryable=is_retryable_status(status),
        retry_after_ms=None if retry_after is None else round(retry_after * 1000),
        details=details,
    )
