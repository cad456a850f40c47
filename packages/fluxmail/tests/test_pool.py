"""Connection pools: per-message results, many connections, recycling, reconnects, rate limits."""

from __future__ import annotations

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import FluxMail, FluxMailException, MessageTemplate, RateLimit, SendResult
from fluxmail.pool import _Work
from fluxmail.ratelimit import RateLimiter
from fluxmail.retry import RetryPolicy
from fluxmail.testing import capture

TEMPLATE = MessageTemplate(sender="news@example.com", subject="Hi {{ n }}", text="Body {{ n }}")


def items(count: int, start: int = 0) -> list[tuple[object, bytes]]:
    return [TEMPLATE.render(f"user{i}@example.com", n=i) for i in range(start, start + count)]


def subjects(server: SMTPTestServer) -> set[str]:
    return {m.message["Subject"] for m in server.messages}


def make(server: SMTPTestServer, **kwargs: object) -> FluxMail:
    return FluxMail("smtp", server.host, port=server.port, retry_delay=0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("pipelining", [True, False])
def test_sync_pool_one_connection(smtp_server: SMTPServerFactory, pipelining: bool) -> None:
    server = smtp_server(pipelining=pipelining)
    with make(server).pool(max_connections=1) as pool:
        results = pool.send_many(items(12))
    assert all(isinstance(r, SendResult) for r in results)
    assert [r.accepted for r in results] == [(f"user{i}@example.com",) for i in range(12)]
    assert subjects(server) == {f"Hi {i}" for i in range(12)}
    assert server.connections == 1


def test_sync_pool_many_connections(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    with make(server).pool(max_connections=4, batch_size=5) as pool:
        results = pool.send_many(items(40))
    assert len(results) == 40
    assert all(isinstance(r, SendResult) for r in results)
    assert len(server.messages) == 40
    assert 1 < server.connections <= 4


def test_sync_pool_sends_one_batch_in_the_callers_thread(smtp_server: SMTPServerFactory) -> None:
    """Messages that fit in one batch go out on one connection from the calling thread: a
    second worker would find nothing left, so no thread is started for it."""
    import threading

    server = smtp_server()
    threads: set[str] = set()
    with make(server).pool(max_connections=4, batch_size=10) as pool:
        pool.send_many(items(10), on_result=lambda *_: threads.add(threading.current_thread().name))
        assert threads == {threading.current_thread().name}
        pool.send_many(items(11, start=10))
    assert len(server.messages) == 21
    assert server.connections == 2  # the second call's 11 messages: two batches


async def test_async_pool(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(pipelining=True)
    async with make(server).async_pool(max_connections=3, batch_size=4) as pool:
        results = await pool.send_many(items(15))
        one = await pool.send(*items(1, start=100)[0])  # type: ignore[arg-type]
    assert all(isinstance(r, SendResult) for r in results)
    assert one.accepted == ("user100@example.com",)
    assert subjects(server) == {f"Hi {i}" for i in (*range(15), 100)}
    assert server.connections <= 3


def test_connections_are_reused_across_calls(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    with make(server).pool(max_connections=1) as pool:
        pool.send_many(items(3))
        pool.send_many(items(3, start=3))
    assert server.connections == 1
    assert server.commands[-1] == "QUIT"


def test_messages_per_connection_cap(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    with make(server).pool(max_connections=1, max_messages_per_connection=4) as pool:
        pool.send_many(items(10))
    assert len(server.messages) == 10
    assert server.connections == 3  # 4 + 4 + 2


def test_idle_connections_are_not_reused(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    with make(server).pool(max_connections=1, idle_timeout=0) as pool:
        pool.send_many(items(2))
        pool.send_many(items(2, start=2))
    assert server.connections == 2


def test_per_message_refusals_and_retries(smtp_server: SMTPServerFactory) -> None:
    faults = Faults(
        refuse_recipients={"user3@example.com": (550, "5.1.1 No such user")},
        transient_failures=2,
    )
    server = smtp_server(pipelining=True, faults=faults)
    with make(server, max_retries=2).pool(max_connections=1) as pool:
        results = pool.send_many(items(6))
    refused = results[3]
    assert isinstance(refused, FluxMailException)
    assert refused.code == "recipients_refused"
    assert all(isinstance(r, SendResult) for i, r in enumerate(results) if i != 3)
    assert subjects(server) == {f"Hi {i}" for i in (0, 1, 2, 4, 5)}
    assert len(server.rejected) == 2  # the two 451s, sent again and accepted


@pytest.mark.parametrize("transient", [0, 2])
async def test_async_pool_settles_each_message_as_its_reply_comes(
    smtp_server: SMTPServerFactory, transient: int
) -> None:
    """One connection, one pipelined batch: each outcome is reported once, as its reply
    comes (in the batch's order when nothing is retried); a refusal mid-batch settles that
    message alone, a transient failure is retried, and every result names its own
    recipient, nobody refused."""
    faults = Faults(
        refuse_recipients={"user3@example.com": (550, "5.1.1 No such user")},
        transient_failures=transient,
    )
    server = smtp_server(pipelining=True, faults=faults)
    heard: list[tuple[int, object]] = []
    async with make(server, max_retries=1).async_pool(max_connections=1) as pool:
        results = await pool.send_many(items(8), on_result=lambda i, o: heard.append((i, o)))
    if not transient:
        assert [i for i, _ in heard] == list(range(8))
    assert sorted(i for i, _ in heard) == list(range(8))
    assert [o for _, o in sorted(heard, key=lambda pair: pair[0])] == results
    assert getattr(results[3], "code", None) == "recipients_refused"
    for i, result in enumerate(results):
        if i != 3:
            assert isinstance(result, SendResult)
            assert result.accepted == (f"user{i}@example.com",)
            assert result.refused == {}
            assert result.reply.code == 250
    assert len(server.rejected) == transient


async def test_reconnects_when_the_connection_dies(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(drop_after_messages=3))
    async with make(server, max_retries=3).async_pool(max_connections=1) as pool:
        results = await pool.send_many(items(10))
    assert all(isinstance(r, SendResult) for r in results)
    assert subjects(server) == {f"Hi {i}" for i in range(10)}  # none lost, none twice
    assert len(server.messages) == 10
    assert server.connections == 4


def test_unreachable_relay_fails_every_message(smtp_server: SMTPServerFactory) -> None:
    mailer = FluxMail("smtp", "127.0.0.1", port=closed_port(), max_retries=1, retry_delay=0)
    with mailer.pool(max_connections=2) as pool:
        results = pool.send_many(items(5))
    assert all(getattr(r, "code", None) == "connection_refused" for r in results)


def test_wrong_password_settles_everything_at_once(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    mailer = make(server, username="user@example.com", password="wrong", max_retries=5)
    with mailer.pool(max_connections=2) as pool:
        results = pool.send_many(items(20))
    assert all(getattr(r, "code", None) == "auth_failed" for r in results)
    assert server.connections <= 2  # not one login attempt per message


def test_send_raises_send_failed(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    with make(server).pool() as pool, pytest.raises(FluxMailException) as info:
        pool.send(*items(1)[0])  # type: ignore[arg-type]
    assert info.value.code == "send_failed"
    assert getattr(info.value.__cause__, "code", None) == "smtp_permanent"


def test_rate_limited_pool_sends_everything(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    limit = RateLimit(per_second=500, burst=5)
    with make(server).pool(max_connections=3, rate_limit=limit) as pool:
        results = pool.send_many(items(20))
    assert all(isinstance(r, SendResult) for r in results)
    assert pool.limiter is not None


def test_the_last_messages_are_shared_among_the_workers() -> None:
    """A worker takes at most an even share of what is left, so the end of a send keeps
    every connection busy instead of leaving the remainder to the first to finish."""
    work = _Work(30, RetryPolicy(), workers=3)
    sizes = [len(work.take(8)) for _ in range(9)]
    assert sizes == [8, 8, 5, 3, 2, 2, 1, 1, 0]  # without shares: 8, 8, 8, 6, 0


def test_capture_applies_to_pools() -> None:
    mailer = FluxMail("smtp", "127.0.0.1", port=closed_port())
    with capture() as outbox, mailer.pool() as pool:
        results = pool.send_many(items(3))
    assert [m.subject for m in outbox] == ["Hi 0", "Hi 1", "Hi 2"]
    assert all(isinstance(r, SendResult) for r in results)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    def test_steady_rate_after_a_burst(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(RateLimit(per_second=10, burst=3), clock)
        waits = [limiter.reserve() for _ in range(6)]
        assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])

    def test_rate_recovers_when_idle(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(RateLimit(per_second=10, burst=2), clock)
        assert [limiter.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])
        clock.now += 10
        assert [limiter.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])

    def test_batch_reservation_waits_for_its_last_slot(self) -> None:
        limiter = RateLimiter(RateLimit(per_second=100, burst=1), FakeClock())
        assert limiter.reserve(5) == pytest.approx(0.04)
        assert limiter.reserve(1) == pytest.approx(0.05)

    def test_period_window_is_exact(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(RateLimit(max_per_period=3, period=60), clock)
        assert [limiter.reserve() for _ in range(3)] == [0, 0, 0]
        assert limiter.reserve() == pytest.approx(60)  # the 4th waits for the 1st to age out
        clock.now += 30
        assert limiter.reserve() == pytest.approx(30)  # the 5th: 60 s after the 2nd

    def test_both_limits_together(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(RateLimit(per_second=1, max_per_period=2, period=10), clock)
        assert [limiter.reserve() for _ in range(3)] == pytest.approx([0, 1, 10])

    @pytest.mark.parametrize(
        "kwargs",
        [{"per_second": -1}, {"burst": 0}, {"max_per_period": 5}, {"period": 60.0}],
    )
    def test_invalid(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(FluxMailException) as info:
            RateLimit(**kwargs)  # type: ignore[arg-type]
        assert info.value.code == "invalid_config"
