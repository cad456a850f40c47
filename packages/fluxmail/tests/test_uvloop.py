"""The asyncio shell on uvloop's event loop (the ``speed`` extra), and :mod:`fluxmail.loops`.

uvloop's transports do not subclass asyncio's transport classes, and it reads into a buffered
protocol's buffer by its own code: the same conversations must run on it unchanged, TLS too.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults
from fluxmail import BulkSender, FluxMail, MessageTemplate, SendResult, loops

from .conftest import PASSWORD, USER

uvloop = pytest.importorskip("uvloop")

TEMPLATE = MessageTemplate(sender="news@example.com", subject="Hi {{ n }}", text="Body {{ n }}")


def items(count: int) -> list[tuple[object, bytes]]:
    return [TEMPLATE.render(f"user{i}@example.com", n=i) for i in range(count)]


def test_async_pool_on_uvloop(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(pipelining=True, faults=Faults(drop_after_messages=7))
    mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0, max_retries=3)

    async def main() -> list[object]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with mailer.async_pool(max_connections=3, batch_size=4) as pool:
            return list(await pool.send_many(items(30)))  # type: ignore[arg-type]

    results = uvloop.run(main())
    assert all(isinstance(r, SendResult) for r in results)
    # The messages of the dropped connections were sent again: every one arrived. (At least
    # once: one whose final reply the drop cut off is Unconfirmed, and sent again.)
    assert {m.message["Subject"] for m in server.messages} == {f"Hi {i}" for i in range(30)}
    assert server.connections > 3


@pytest.mark.parametrize(("mode", "flag"), [("starttls", "use_tls"), ("ssl", "use_ssl")])
def test_tls_on_uvloop(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, mode: str, flag: str
) -> None:
    server = smtp_server(tls=mode, auth=True, auth_require_tls=True)
    mailer = FluxMail(
        "smtp", "localhost", port=server.port, ssl_context=client_ssl_context,
        sender="from@example.com", username=USER, password=PASSWORD, **{flag: True},
    )  # fmt: skip

    async def main() -> None:
        await mailer.create("uvloop TLS", ["to@example.com"], "hi").send_async()

    uvloop.run(main())
    (received,) = server.wait_for_messages(1)
    assert received.tls
    assert received.auth_user == USER


def test_loops_run_takes_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def kind() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert loops.uvloop_available()
    assert loops.run(kind()) is uvloop.Loop
    monkeypatch.setattr(loops, "uvloop_available", lambda: False)
    assert not issubclass(loops.run(kind()), uvloop.Loop)


def test_send_rows_processes_on_uvloop(smtp_server: SMTPServerFactory) -> None:
    """The worker processes start their loops through :func:`loops.run` (uvloop here)."""
    server = smtp_server(pipelining=True)
    mailer = FluxMail("smtp", server.host, port=server.port, retry_delay=0)
    rows = [{"email": f"reader{i}@example.com", "n": i} for i in range(40)]
    report = BulkSender(mailer).send_rows(
        TEMPLATE, rows, processes=2, max_connections=2, progress=False
    )
    assert (report["sent"], report["failed"]) == (40, 0)
    assert len(server.messages) == 40
