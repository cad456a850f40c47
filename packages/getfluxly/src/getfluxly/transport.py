"""HTTP requests with the retry policy, written once for the sync and async clients.

The policy is a pure function of one attempt's outcome (:meth:`RetryPolicy.next_delay`): the
status, the ``Retry-After`` header and how many attempts were made decide whether to send the
request again and after how long. :func:`send` and :func:`send_async` are the two thin shells
that perform attempts and wait; the request they send again is the same object, byte for byte,
idempotency key included.

Retry policy (spec §4):

- Retried: 408, 425, 429 and every 5xx, and network errors (connection refused or reset, no
  answer within ``timeout``). Not retried: every other status (400, 401, 403, 404, 409, 413...),
  which would fail the same way again.
- At most ``max_retries`` retries (``max_retries + 1`` attempts in all).
- A ``Retry-After`` header (seconds or an HTTP date), on any retryable answer, is the delay,
  exactly; when it asks for more than ``max_retry_after`` seconds the request fails instead
  (``retry_after_ms`` on the error says when to come back), so one rate-limited batch cannot
  stall the client for an hour.
- Otherwise exponential backoff with "equal jitter": retry *n* (1, 2, ...) waits a random time
  between half and all of ``min(max_delay, base_delay * 2 ** (n - 1))``; with the defaults
  0.25–0.5 s, then 0.5–1 s. The random half spreads out many clients that failed together; the
  fixed half keeps a retry from coming back at once.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from getfluxly._version import __version__
from getfluxly.errors import GFluxError, error_from_reply, is_retryable_status

__all__ = [
    "Outcome",
    "Reply",
    "Request",
    "RetryPolicy",
    "parse_retry_after",
    "send",
    "send_async",
]

log = logging.getLogger("getfluxly")

USER_AGENT = f"getfluxly-python/{__version__}"


@dataclass(frozen=True)
class Request:
    """One POST: its path (below ``api_host``), JSON body and extra headers.

    ``body`` may be a function: it is then called for every attempt (a batch restamps its
    ``sent_at`` each time, so the server's clock-skew correction stays right on retries).
    """

    path: str
    body: bytes | Callable[[], bytes]
    headers: Mapping[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return self.body() if callable(self.body) else self.body


@dataclass(frozen=True)
class Reply:
    """An HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds (header names in any case)."""
        value = next((v for k, v in self.headers.items() if k.lower() == "retry-after"), None)
        return parse_retry_after(value)

    def error(self, **extra: object) -> GFluxError:
        """This (non-2xx) answer as a :class:`GFluxError`."""
        return error_from_reply(self.status, self.body, retry_after=self.retry_after, **extra)


#: What one attempt ended with: an answer, or a network error (as a GFluxError).
Outcome = Reply | GFluxError


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    ``None`` when absent or unreadable; never negative (a date in the past means now).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a failed request again (module docstring). Pure, so tests can ask it."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0
    #: Source of jitter in [0, 1), ``random.random`` by default (tests pass a constant).
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    def retryable(self, outcome: Outcome) -> bool:
        if isinstance(outcome, GFluxError):
            return outcome.retryable
        return not outcome.ok and is_retryable_status(outcome.status)

    def next_delay(self, attempts: int, outcome: Outcome) -> float | None:
        """Seconds to wait before attempt ``attempts + 1``, or ``None``: do not retry.

        ``attempts`` is how many attempts were made, the one that ended in ``outcome``
        included (so 1 after the first).
        """
        if not self.retryable(outcome) or attempts > self.max_retries:
            return None
        if isinstance(outcome, Reply):
            retry_after = outcome.retry_after
            if retry_after is not None:
                return retry_after if retry_after <= self.max_retry_after else None
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempts - 1))
        return ceiling / 2 + self.jitter() * ceiling / 2


def headers(token: str) -> dict[str, str]:
    """Headers of every request: bearer auth, JSON, and who is calling."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def _network_error(exc: Exception) -> GFluxError:
    if isinstance(exc, httpx.TimeoutException):
        return GFluxError(
            f"no answer in time: {exc!r}",
            code="timeout",
            retryable=True,
            details={"exception": type(exc).__name__},
        )
    return GFluxError(
        f"could not reach the server: {exc or type(exc).__name__}",
        code="network_error",
        retryable=True,
        details={"exception": type(exc).__name__},
    )


def _closed() -> GFluxError:
    return GFluxError("the client was shut down", code="client_closed")


def _final(outcome: Outcome, attempts: int) -> Reply:
    if isinstance(outcome, Reply):
        if outcome.ok:
            return outcome
        raise outcome.error(attempts=attempts)
    raise outcome.with_details(attempts=attempts)


def _log_retry(request: Request, attempts: int, outcome: Outcome, delay: float) -> None:
    what = f"HTTP {outcome.status}" if isinstance(outcome, Reply) else outcome.code
    log.debug(
        "POST %s attempt %d failed (%s); retrying in %.3f s", request.path, attempts, what, delay
    )


def send(
    http: httpx.Client,
    request: Request,
    policy: RetryPolicy,
    sleep: Callable[[float], bool],
) -> Reply:
    """POST ``request`` until it succeeds or the policy gives up; the 2xx :class:`Reply`.

    ``sleep(seconds)`` waits between attempts and returns True when it was interrupted (the
    client is shutting down), which ends the retries. Raises :class:`GFluxError` for the last
    failure (``details["attempts"]`` says how many were made).
    """
    attempts = 0
    while True:
        attempts += 1
        outcome: Outcome
        try:
            answer = http.post(
                request.path, content=request.payload(), headers=dict(request.headers)
            )
            outcome = Reply(answer.status_code, answer.headers, answer.content)
        except httpx.TransportError as exc:
            outcome = _network_error(exc)
        except RuntimeError as exc:
            # httpx raises RuntimeError for a closed client: shutdown() ran meanwhile.
            raise _closed() from exc
        delay = policy.next_delay(attempts, outcome)
        if delay is None:
            return _final(outcome, attempts)
        _log_retry(request, attempts, outcome, delay)
        if sleep(delay):
            return _final(outcome, attempts)


async def send_async(
    http: httpx.AsyncClient,
    request: Request,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> Reply:
    """:func:`send` for ``httpx.AsyncClient``; ``sleep`` is awaited (cancel the task to stop)."""
    attempts = 0
    while True:
        attempts += 1
        outcome: Outcome
        try:
            answer = await http.post(
                request.path, content=request.payload(), headers=dict(request.headers)
            )
            outcome = Reply(answer.status_code, answer.headers, answer.content)
        except httpx.TransportError as exc:
            outcome = _network_error(exc)
        except RuntimeError as exc:
            raise _closed() from exc
        delay = policy.next_delay(attempts, outcome)
        if delay is None:
            return _final(outcome, attempts)
        _log_retry(request, attempts, outcome, delay)
        await sleep(delay)
