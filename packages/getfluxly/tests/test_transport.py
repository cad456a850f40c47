"""The retry policy (a pure function) and error mapping, without a server."""

from __future__ import annotations

import datetime as dt
import email.utils
import pickle

import pytest

from getfluxly import GFluxError
from getfluxly.errors import error_from_reply
from getfluxly.transport import Reply, RetryPolicy, parse_retry_after


def _reply(status: int, **headers: str) -> Reply:
    return Reply(status, headers, b"")


def _network() -> GFluxError:
    return GFluxError("refused", code="network_error", retryable=True)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert RetryPolicy().next_delay(1, _reply(status)) is not None


@pytest.mark.parametrize("status", [200, 202, 301, 400, 401, 403, 404, 409, 413, 422])
def test_final_statuses(status: int) -> None:
    assert RetryPolicy().next_delay(1, _reply(status)) is None


def test_network_errors_retry_and_client_errors_do_not() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, _network()) is not None
    assert policy.next_delay(1, GFluxError("x", code="client_closed")) is None


def test_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.next_delay(2, _reply(503)) is not None
    assert policy.next_delay(3, _reply(503)) is None
    assert RetryPolicy(max_retries=0).next_delay(1, _reply(503)) is None


def test_backoff_is_exponential_with_equal_jitter() -> None:
    low = RetryPolicy(max_retries=10, jitter=lambda: 0.0)
    high = RetryPolicy(max_retries=10, jitter=lambda: 1.0)
    assert [low.next_delay(n, _reply(503)) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert [high.next_delay(n, _reply(503)) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert high.next_delay(10, _reply(503)) == 30.0  # max_delay
    assert low.next_delay(10, _reply(503)) == 15.0


def test_retry_after_seconds_is_the_delay() -> None:
    policy = RetryPolicy(jitter=lambda: 0.5)
    assert policy.next_delay(1, _reply(429, **{"Retry-After": "7"})) == 7.0
    assert policy.next_delay(1, _reply(503, **{"retry-after": "0"})) == 0.0
    assert policy.next_delay(1, _reply(503, **{"retry-after": "soon"})) == 0.375


def test_retry_after_date() -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    delay = RetryPolicy().next_delay(
        1, _reply(429, **{"Retry-After": email.utils.format_datetime(when, usegmt=True)})
    )
    assert delay is not None
    assert 25 < delay <= 30


def test_retry_after_beyond_the_cap_gives_up() -> None:
    policy = RetryPolicy(max_retry_after=60)
    assert policy.next_delay(1, _reply(429, **{"Retry-After": "60"})) == 60.0
    assert policy.next_delay(1, _reply(429, **{"Retry-After": "3600"})) is None


def test_retry_after_on_a_final_status_is_ignored() -> None:
    assert RetryPolicy().next_delay(1, _reply(400, **{"Retry-After": "1"})) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("not a date", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_negative_max_retries_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


def test_error_from_documented_body() -> None:
    error = error_from_reply(
        409, b'{"error": "alias_conflict", "detail": "taken", "field": "anonymous_id"}'
    )
    assert (error.code, error.message, error.retryable) == ("alias_conflict", "taken", False)
    assert error.details == {"status": 409, "field": "anonymous_id"}
    assert error.status == 409
    assert str(error) == "alias_conflict: taken"


def test_error_from_a_proxy_page() -> None:
    error = error_from_reply(502, b"<html>Bad gateway</html>", retry_after=2.5)
    assert error.code == "server_error"
    assert error.retryable
    assert error.retry_after_ms == 2500
    assert "Bad gateway" in error.message
    assert error_from_reply(429, b"").code == "rate_limited"
    assert error_from_reply(418, b"").code == "http_error"


def test_error_pickles() -> None:
    error = GFluxError(
        "full", code="queue_overflow", retryable=True, retry_after_ms=5, details={"a": 1}
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert (copy.code, copy.message, copy.retryable, copy.retry_after_ms, copy.details) == (
        "queue_overflow",
        "full",
        True,
        5,
        {"a": 1},
    )
