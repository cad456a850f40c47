"""The blocking shell's plain sockets wait with the kernel's timeouts (no poll before each
call) and still give up in time; TLS sockets keep Python's timeout (OpenSSL needs it)."""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults
from fluxmail import FluxMail, FluxMailException, Unconfirmed

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="kernel timeouts are used on Linux only"
)


def _rcvtimeo(sock: socket.socket) -> float:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("@ll"))
    seconds, micro = struct.unpack("@ll", raw)
    return float(seconds + micro / 1_000_000)


def _mailer(port: int, mode: str, ctx: ssl.SSLContext | None, timeout: float) -> FluxMail:
    return FluxMail(
        "smtp", "localhost", port=port, sender="a@example.com", timeout=timeout,
        use_tls=mode == "starttls", use_ssl=mode == "ssl", ssl_context=ctx,
    )  # fmt: skip


@linux_only
@pytest.mark.parametrize("mode", ["none", "starttls", "ssl"])
def test_a_plain_socket_is_blocking_with_kernel_timeouts_and_tls_keeps_pythons(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, mode: str
) -> None:
    server = smtp_server(tls=mode)
    with _mailer(server.port, mode, client_ssl_context, 2.5) as mailer:
        mailer.connect()
        conn = mailer._conn
        assert conn is not None
        assert conn._sock is not None
        sock = conn._sock
        if mode == "none":
            assert sock.gettimeout() is None  # blocking: no poll before each call
            assert _rcvtimeo(sock) == pytest.approx(2.5)
        else:
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.gettimeout() == 2.5
            assert _rcvtimeo(sock) == 0  # cleared before the STARTTLS handshake
        mailer.create("Hi", ["to@example.com"], "Body").send()
    assert [m.rcpt_tos for m in server.wait_for_messages(1)] == [["to@example.com"]]


@pytest.mark.parametrize("mode", ["none", "starttls", "ssl"])
def test_a_stalled_final_reply_times_out_in_every_mode(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, mode: str
) -> None:
    server = smtp_server(tls=mode, faults=Faults(delay_reply_seconds=2.0))
    mailer = _mailer(server.port, mode, client_ssl_context, 0.3)
    with pytest.raises(FluxMailException) as info:
        mailer.create("x", ["to@example.com"], "x").send()
    cause = info.value.__cause__
    assert isinstance(cause, Unconfirmed)
    assert isinstance(cause, TimeoutError)
    assert cause.code == "timeout"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_a_server_that_never_greets_times_out(silent_port: int) -> None:
    mailer = FluxMail("smtp", "127.0.0.1", port=silent_port, sender="a@e.com", timeout=0.3)
    with pytest.raises(FluxMailException) as info:
        mailer.create("x", ["to@example.com"], "x").send()
    assert info.value.__cause__ is not None
    assert getattr(info.value.__cause__, "code", None) == "timeout"


@pytest.fixture
def stops_reading_port() -> Iterator[int]:
    """A server that answers the envelope and 354, then never reads the content: the
    client's writes fill the socket buffers and block."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 stall.example ESMTP\r\n")
            for answer in (b"250 stall.example\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
                lines.readline()  # EHLO, MAIL, RCPT, DATA (no PIPELINING offered)
                conn.sendall(answer)
            done.wait(10)  # read nothing more until the test is over

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        listener.close()


def test_a_server_that_stops_reading_times_out_the_write(stops_reading_port: int) -> None:
    mailer = FluxMail("smtp", "127.0.0.1", port=stops_reading_port, sender="a@e.com", timeout=0.5)
    body = ("x" * 76 + "\n") * 400_000  # 30 MB: far more than the socket buffers hold
    with pytest.raises(FluxMailException) as info:
        mailer.create("x", ["to@example.com"], body).send()
    cause = info.value.__cause__
    assert isinstance(cause, TimeoutError)
    assert isinstance(cause, Unconfirmed)
    assert getattr(cause, "code", None) == "timeout"
