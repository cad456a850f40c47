"""Retries of transient failures only, reconnecting when the connection broke (sync and async)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer
from fluxmail import FluxMail, FluxMailException, SMTPReplyError

Send = Callable[[FluxMail], Awaitable[str]]


async def sync_send(mailer: FluxMail) -> str:
    return mailer.send()


async def async_send(mailer: FluxMail) -> str:
    return await mailer.send_async()


both = pytest.mark.parametrize("send", [sync_send, async_send], ids=["sync", "async"])


def make(server: SMTPTestServer, **kwargs: object) -> FluxMail:
    options: dict[str, object] = {"sender": "from@example.com", "retry_delay": 0, **kwargs}
    return FluxMail("smtp", server.host, port=server.port, **options)


@both
async def test_transient_4xx_then_success(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(transient_failures=2))
    mailer = make(server, max_retries=2)
    assert await send(mailer.create("x", ["to@example.com"], "x")) == (
        "Email sent successfully via SMTP."
    )
    assert len(server.rejected) == 2
    assert len(server.messages) == 1


@both
async def test_no_retries_by_default(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    with pytest.raises(FluxMailException) as info:
        await send(make(server).create("x", ["to@example.com"], "x"))
    assert info.value.code == "send_failed"
    assert "after 1 attempt" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, SMTPReplyError)
    assert cause.reply.code == 451
    assert cause.transient


@both
async def test_permanent_5xx_is_not_retried(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    with pytest.raises(FluxMailException) as info:
        await send(make(server, max_retries=3).create("x", ["to@example.com"], "x"))
    assert info.value.code == "send_failed"
    assert isinstance(info.value.__cause__, SMTPReplyError)
    assert info.value.__cause__.reply.code == 554
    assert len(server.rejected) == 1  # tried once, never again


@both
async def test_retries_exhausted(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(transient_failures=10))
    with pytest.raises(FluxMailException) as info:
        await send(make(server, max_retries=2).create("x", ["to@example.com"], "x"))
    assert "after 3 attempts" in str(info.value)
    assert len(server.rejected) == 3


@both
async def test_greeting_421_then_recovers(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(greeting_code=421))
    mailer = make(server, max_retries=3, retry_delay=0.05)

    def heal() -> None:  # the relay comes back while the client is retrying
        while server.connections < 2:
            time.sleep(0.01)
        server.faults.greeting_code = None

    healer = threading.Thread(target=heal)  # a thread: the sync send blocks the event loop
    healer.start()
    try:
        await send(mailer.create("x", ["to@example.com"], "x"))
    finally:
        server.faults.greeting_code = None
        healer.join()
    assert len(server.messages) == 1
    # Refused once at least, then through. (Not ">= 3": the healer may clear the fault
    # between the second connection's accept and its greeting, which then succeeds.)
    assert server.connections >= 2


@both
async def test_dropped_mid_data_reconnects(smtp_server: SMTPServerFactory, send: Send) -> None:
    server = smtp_server(faults=Faults(drop_in_data=1))
    await send(make(server, max_retries=1).create("x", ["to@example.com"], "x"))
    assert len(server.messages) == 1
    assert server.connections == 2


@both
async def test_connection_refused_is_retried_then_fails(send: Send) -> None:
    from flux_testkit.smtpd import closed_port

    mailer = FluxMail(
        "smtp", "127.0.0.1", port=closed_port(), max_retries=1, retry_delay=0,
        sender="a@example.com",
    )  # fmt: skip
    with pytest.raises(FluxMailException) as info:
        await send(mailer.create("x", ["to@example.com"], "x"))
    assert "after 2 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert getattr(info.value.__cause__, "code", None) == "connection_refused"


async def test_timeout_is_a_timeout_error(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=1.0))
    mailer = make(server, timeout=0.2)
    for send in (sync_send, async_send):
        with pytest.raises(FluxMailException) as info:
            await send(mailer.create("x", ["to@example.com"], "x"))
        assert isinstance(info.value.__cause__, TimeoutError)
        assert getattr(info.value.__cause__, "code", None) == "timeout"


def test_context_manager_holds_one_connection(plain_smtp: SMTPTestServer) -> None:
    with make(plain_smtp) as mailer:
        for i in range(5):
            mailer.create(f"m{i}", ["to@example.com"], "x").send()
    assert len(plain_smtp.messages) == 5
    assert plain_smtp.connections == 1
    assert plain_smtp.commands[-1] == "QUIT"


async def test_async_context_manager_holds_one_connection(plain_smtp: SMTPTestServer) -> None:
    async with make(plain_smtp) as mailer:
        for i in range(5):
            await mailer.create(f"m{i}", ["to@example.com"], "x").send_async()
    assert len(plain_smtp.messages) == 5
    assert plain_smtp.connections == 1
    assert plain_smtp.commands[-1] == "QUIT"


@both
async def test_persistent_connection_that_died_is_reopened(
    smtp_server: SMTPServerFactory, send: Send
) -> None:
    # The old package retried on the dead connection forever; we reconnect.
    server = smtp_server(faults=Faults(drop_after_messages=2))
    mailer = make(server, max_retries=1)
    if send is sync_send:
        with mailer:
            for i in range(5):
                await send(mailer.create(f"m{i}", ["to@example.com"], "x"))
    else:
        async with mailer:
            for i in range(5):
                await send(mailer.create(f"m{i}", ["to@example.com"], "x"))
    assert [m.message["Subject"] for m in server.messages] == ["m0", "m1", "m2", "m3", "m4"]
    assert server.connections == 3


@both
async def test_failed_message_does_not_poison_the_session(
    smtp_server: SMTPServerFactory, send: Send
) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    async with make(server) as mailer:
        with pytest.raises(FluxMailException):
            await send(mailer.create("bad", ["to@example.com"], "x"))
        server.faults.permanent_failure = False
        await send(mailer.create("good", ["to@example.com"], "x"))
    assert [m.message["Subject"] for m in server.messages] == ["good"]
    assert "RSET" in server.commands
    assert server.connections == 1
