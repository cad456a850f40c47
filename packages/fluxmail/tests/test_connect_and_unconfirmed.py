"""Two guarantees a ledger builds on, against the real test server:

- ``resolve``: the caller decides which addresses a connection may reach; the name is never
  looked up again behind its back, and TLS still checks the certificate against the name.
- :class:`Unconfirmed`: a failure after a message's content went out is told apart from one
  before it, per message, in single sends and in pipelined pool batches.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from flux_testkit.netguard import unresolvable_names
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer
from fluxmail import FluxMail, FluxMailException, MessageTemplate, SendResult, Unconfirmed

TEMPLATE = MessageTemplate(sender="news@example.com", subject="Hi {{ n }}", text="Body {{ n }}")


def items(count: int) -> list[tuple[object, bytes]]:
    return [TEMPLATE.render(f"user{i}@example.com", n=i) for i in range(count)]


class TestResolve:
    def test_connects_where_the_resolver_says_without_a_lookup(
        self, plain_smtp: SMTPTestServer
    ) -> None:
        asked: list[tuple[str, int]] = []

        def resolve(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return ["127.0.0.1"]

        mailer = FluxMail(
            "smtp", "relay.example", port=plain_smtp.port, sender="a@example.com", resolve=resolve
        )
        with unresolvable_names():  # a lookup of relay.example would fail
            mailer.create("via resolver", ["to@example.com"], "x").send()
            with mailer.pool(max_connections=1) as pool:
                assert isinstance(pool.send(*items(1)[0]), SendResult)  # type: ignore[arg-type]
        assert asked == [("relay.example", plain_smtp.port)] * 2
        assert len(plain_smtp.messages) == 2

    def test_a_refusing_resolver_is_a_connection_failure(self) -> None:
        def refuse(host: str, port: int) -> list[str]:
            raise ConnectionRefusedError(f"{host} is not allowed")

        mailer = FluxMail("smtp", "relay.example", port=25, sender="a@example.com", resolve=refuse)
        with pytest.raises(FluxMailException) as info:
            mailer.create("x", ["to@example.com"], "x").send()
        assert getattr(info.value.__cause__, "code", None) == "connection_refused"

    def test_later_addresses_are_tried_in_order(self, plain_smtp: SMTPTestServer) -> None:
        # Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1): refused, then on.
        mailer = FluxMail(
            "smtp", "relay.example", port=plain_smtp.port, sender="a@example.com",
            resolve=lambda host, port: ["127.0.0.2", "127.0.0.1"],
        )  # fmt: skip
        mailer.create("second address", ["to@example.com"], "x").send()
        assert len(plain_smtp.messages) == 1

    @pytest.mark.parametrize(("name", "works"), [("localhost", True), ("relay.example", False)])
    def test_tls_checks_the_certificate_against_the_name(
        self,
        smtp_server: SMTPServerFactory,
        client_ssl_context: ssl.SSLContext,
        name: str,
        works: bool,
    ) -> None:
        server = smtp_server(tls="starttls")
        mailer = FluxMail(
            "smtp", name, port=server.port, use_tls=True, ssl_context=client_ssl_context,
            sender="a@example.com", resolve=lambda host, port: ["127.0.0.1"],
        )  # fmt: skip
        if works:
            mailer.create("tls", ["to@example.com"], "x").send()
            assert len(server.messages) == 1
        else:  # the certificate is for localhost: the address alone does not make it valid
            with pytest.raises(FluxMailException) as info:
                mailer.create("tls", ["to@example.com"], "x").send()
            assert getattr(info.value.__cause__, "code", None) == "tls_failed"


class TestUnconfirmed:
    def test_a_drop_after_the_content_is_unconfirmed(self, smtp_server: SMTPServerFactory) -> None:
        server = smtp_server(faults=Faults(drop_in_data=1))
        mailer = FluxMail("smtp", server.host, port=server.port, sender="a@example.com")
        with pytest.raises(FluxMailException) as info:
            mailer.create("x", ["to@example.com"], "x").send()
        cause = info.value.__cause__
        assert isinstance(cause, Unconfirmed)
        assert isinstance(cause, ConnectionError)
        assert cause.code == "connection_lost"

    def test_a_drop_before_the_content_is_not(self, smtp_server: SMTPServerFactory) -> None:
        server = smtp_server(faults=Faults(drop_after_messages=0))
        mailer = FluxMail("smtp", server.host, port=server.port, sender="a@example.com")
        with pytest.raises(FluxMailException) as info:
            mailer.create("x", ["to@example.com"], "x").send()
        assert isinstance(info.value.__cause__, ConnectionError)
        assert not isinstance(info.value.__cause__, Unconfirmed)

    def test_no_final_reply_in_time_is_an_unconfirmed_timeout(
        self, smtp_server: SMTPServerFactory
    ) -> None:
        server = smtp_server(faults=Faults(delay_reply_seconds=1.0))
        mailer = FluxMail(
            "smtp", server.host, port=server.port, sender="a@example.com", timeout=0.2
        )
        with pytest.raises(FluxMailException) as info:
            mailer.create("x", ["to@example.com"], "x").send()
        cause = info.value.__cause__
        assert isinstance(cause, Unconfirmed)
        assert isinstance(cause, TimeoutError)
        assert cause.code == "timeout"

    @pytest.mark.parametrize("pipelining", [True, False])
    def test_pool_marks_only_the_message_in_flight(
        self, smtp_server: SMTPServerFactory, pipelining: bool
    ) -> None:
        server = smtp_server(pipelining=pipelining, faults=Faults(drop_in_data=1))
        mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0)
        with mailer.pool(max_connections=1) as pool:
            first, *rest = pool.send_many(items(3))
        assert isinstance(first, Unconfirmed), first
        for outcome in rest:  # never sent: safe to send again
            assert isinstance(outcome, ConnectionError)
            assert not isinstance(outcome, Unconfirmed)
        assert server.messages == []


def test_close_racing_a_finishing_send_leaves_no_connection_parked(
    plain_smtp: SMTPTestServer,
) -> None:
    """The race, made deterministic: a worker thread is about to park its connection (inside
    the reusability check) when close() drains the pool. The connection must be closed (QUIT),
    not parked in the closed pool where nothing would ever close it."""
    import threading
    from dataclasses import dataclass

    from fluxmail import PoolOptions, SMTPPool

    entered, release = threading.Event(), threading.Event()

    @dataclass(frozen=True)
    class Paused(PoolOptions):
        def reusable(self, conn: Any, idle_since: float) -> bool:
            entered.set()
            release.wait(5)
            return super().reusable(conn, idle_since)

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port)
    pool = SMTPPool(mailer._settings, mailer.retry, Paused(max_connections=1))
    envelope, data = items(1)[0]
    sender = threading.Thread(target=pool.send, args=(envelope, data))
    sender.start()
    assert entered.wait(5)
    pool.close()  # while the sender is between "may I keep it?" and parking it
    release.set()
    sender.join(5)
    assert plain_smtp.commands[-1] == "QUIT"
    assert pool._idle == []


def test_a_send_finishing_after_close_does_not_park_its_connection(
    plain_smtp: SMTPTestServer,
) -> None:
    # Threads share one pool (a worker process's); close() may come while one is mid-send.
    # The connection that send used must then be closed (QUIT), not parked in a closed pool.
    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port)
    pool = mailer.pool(max_connections=1)
    envelope, data = items(1)[0]
    pool.close()
    assert isinstance(pool.send(envelope, data), SendResult)  # type: ignore[arg-type]
    assert plain_smtp.commands[-1] == "QUIT"
    pool.close()


async def test_async_sends_use_the_resolver_too(plain_smtp: SMTPTestServer) -> None:
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.2", "127.0.0.1"]  # nothing on the first: refused, then the next

    mailer = FluxMail(
        "smtp", "relay.example", port=plain_smtp.port, sender="a@example.com", resolve=resolve
    )
    with unresolvable_names():
        await mailer.create("async via resolver", ["to@example.com"], "x").send_async()
    assert asked == ["relay.example"]
    assert len(plain_smtp.messages) == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_async_pool_marks_a_lost_final_reply(
    smtp_server: SMTPServerFactory, pipelining: bool
) -> None:
    server = smtp_server(pipelining=pipelining, faults=Faults(drop_after_data=1))
    mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0)
    async with mailer.async_pool(max_connections=1) as pool:
        first, *rest = await pool.send_many(items(3))
    assert isinstance(first, Unconfirmed)
    for outcome in rest:
        assert not isinstance(outcome, Unconfirmed)
    assert len(server.messages) == 1  # the relay has the first one; it was not sent again
