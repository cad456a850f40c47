"""The asyncio shell runs a conversation's exchanges from its protocol callbacks
(``transport/aio.py``): what that must keep from an awaited exchange loop. Timeouts per
exchange, not per conversation; a reply that never comes; a cancelled send; a server that
hangs up mid-stream."""

from __future__ import annotations

import asyncio

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults
from fluxmail import FluxMail, FluxMailException, MessageTemplate, SendResult, Unconfirmed

TEMPLATE = MessageTemplate(sender="news@example.com", subject="Hi {{ n }}", text="Body {{ n }}")


def items(count: int) -> list[tuple[object, bytes]]:
    return [TEMPLATE.render(f"user{i}@example.com", n=i) for i in range(count)]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_each_exchange_gets_the_whole_timeout(
    smtp_server: SMTPServerFactory, pipelining: bool
) -> None:
    # Every final reply takes 0.15 s: the six messages take ~0.9 s on their one connection,
    # more than twice the timeout, and none of their exchanges does.
    server = smtp_server(pipelining=pipelining, faults=Faults(delay_reply_seconds=0.15))
    mailer = FluxMail("smtp", server.host, port=server.port, timeout=0.4, retry_delay=0)
    async with mailer.async_pool(max_connections=1) as pool:
        results = await pool.send_many(items(6))  # type: ignore[arg-type]
    assert all(isinstance(r, SendResult) for r in results), results
    assert len(server.messages) == 6
    assert server.connections == 1


async def test_a_final_reply_that_never_comes_is_an_unconfirmed_timeout(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=2.0))
    mailer = FluxMail("smtp", server.host, port=server.port, timeout=0.2, retry_delay=0)
    async with mailer.async_pool(max_connections=1) as pool:
        first, *rest = await pool.send_many(items(3))  # type: ignore[arg-type]
    assert isinstance(first, Unconfirmed), first
    assert isinstance(first, TimeoutError), first
    assert first.code == "timeout"
    for outcome in rest:  # never sent: the transport's own error, safe to send again
        assert isinstance(outcome, FluxMailException)
        assert outcome.code == "timeout"
        assert not isinstance(outcome, Unconfirmed)


async def test_a_cancelled_send_drops_the_session_and_the_next_send_reconnects(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=2.0))
    mailer = FluxMail("smtp", server.host, port=server.port, sender="a@example.com")
    async with mailer:
        task = asyncio.ensure_future(mailer.create("slow", ["to@example.com"], "x").send_async())
        await asyncio.sleep(0.3)  # the content is out; its final reply is not
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.faults.delay_reply_seconds = 0.0
        assert await mailer.create("next", ["to@example.com"], "x").send_async()
    assert server.connections == 2
    assert [m.message["Subject"] for m in server.messages][-1] == "next"


async def test_a_server_hanging_up_mid_stream_settles_every_message(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(drop_after_messages=2))
    mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0)
    async with mailer.async_pool(max_connections=1, batch_size=10) as pool:
        results = await pool.send_many(items(5))  # type: ignore[arg-type]
    assert [isinstance(r, SendResult) for r in results] == [True, True, False, False, False]
    for outcome in results[2:]:
        assert isinstance(outcome, FluxMailException)
        assert outcome.code == "connection_lost"


async def test_an_on_result_that_raises_ends_every_worker_before_send_many_does(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=0.05))
    mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0)
    reported: list[int] = []

    def on_result(index: int, outcome: object) -> None:
        reported.append(index)
        raise KeyError("stop")  # a caller's callback failing: each worker ends at its next

    async with mailer.async_pool(max_connections=3, batch_size=2) as pool:
        with pytest.raises(KeyError):
            await pool.send_many(items(12), on_result)  # type: ignore[arg-type]
        # No worker of the pool is left sending in the background.
        assert asyncio.all_tasks() == {asyncio.current_task()}
    assert 1 <= len(reported) <= 3
    # What the relay took was reported: the next message of each connection never went out.
    assert len(server.messages) == len(reported)
