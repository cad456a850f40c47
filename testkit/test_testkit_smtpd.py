"""Self-test of flux_testkit: the SMTP test server, driven only by the stdlib's smtplib."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest

from flux_testkit import certs
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port

if TYPE_CHECKING:
    # Importing the plugin module at runtime, before pytest registers it below, would stop
    # pytest from rewriting its asserts (and warn, which -W error makes fatal).
    from flux_testkit.pytest_fixtures import SMTPServerFactory

pytest_plugins = ["flux_testkit.pytest_fixtures"]

USER = "user@example.com"
PASSWORD = "s3cret-pass"
SENDER = "sender@example.com"
RCPT = "rcpt@example.com"
RAW = b"From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: Hello\r\n\r\nBody line\r\n"
TOKEN = "ya29.test-access-token"  # DEFAULT_OAUTH_TOKENS' token of USER


def connect(server: SMTPTestServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=10)


def send_raw(server: SMTPTestServer, raw: bytes = RAW, rcpts: list[str] | None = None) -> None:
    with connect(server) as client:
        client.sendmail(SENDER, rcpts or [RCPT], raw)


def features(client: smtplib.SMTP) -> set[str]:
    client.ehlo()
    return set(client.esmtp_features)


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """For counters the server thread updates after the client already saw the outcome."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- plain delivery and recording -------------------------------------------------------------


def test_plain_send_records_message(plain_smtp: SMTPTestServer) -> None:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = "Grüße"
    msg.set_content("first\n.leading dot\nlast\n")
    with connect(plain_smtp) as client:
        assert client.send_message(msg) == {}

    [received] = plain_smtp.wait_for_messages(1)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RCPT]
    assert received.message["Subject"] == "Grüße"
    # smtplib dot-stuffs ".leading dot"; the server hands back the un-stuffed line.
    assert b"\r\n.leading dot\r\n" in received.data
    assert received.data.endswith(b"last\r\n")
    assert received.message.get_content() == "first\n.leading dot\nlast\n"
    assert received.tls is False
    assert received.tls_version is None
    assert received.auth_user is None
    assert received.peer[0] == "127.0.0.1"
    assert received.rcpt_options == [[]]
    assert plain_smtp.rejected == []


def test_data_is_exact_bytes(plain_smtp: SMTPTestServer) -> None:
    raw = b"Subject: x\r\n\r\n..two dots\r\n\xc3\xa9 8bit\r\nno newline at end"
    send_raw(plain_smtp, raw)
    [received] = plain_smtp.wait_for_messages(1)
    # smtplib stuffs the leading dot and appends the CRLF before the terminator.
    assert received.data == raw + b"\r\n"


def test_null_sender_is_empty_string(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.sendmail("", [RCPT], RAW)
    assert plain_smtp.wait_for_messages(1)[0].mail_from == ""


def test_commands_are_recorded_without_content(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.ehlo("client.example")
        client.sendmail(SENDER, [RCPT], RAW)
    plain_smtp.wait_for_messages(1)
    assert [c.upper() for c in plain_smtp.commands] == [
        "EHLO CLIENT.EXAMPLE",
        f"MAIL FROM:<{SENDER.upper()}> SIZE={len(RAW)}",
        f"RCPT TO:<{RCPT.upper()}>",
        "DATA",
        "QUIT",
    ]


def test_connections_count_only_clients(plain_smtp: SMTPTestServer) -> None:
    assert plain_smtp.connections == 0
    send_raw(plain_smtp)
    send_raw(plain_smtp)
    assert plain_smtp.connections == 2
    plain_smtp.clear()
    assert (plain_smtp.connections, plain_smtp.messages, plain_smtp.commands) == (0, [], [])


def test_ehlo_advertisement_of_plain_server(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        assert features(client) == {"size", "8bitmime", "smtputf8", "help"}
        assert client.esmtp_features["size"] == "33554432"
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()
        code, _ = client.docmd("AUTH", "PLAIN AHVzZXIAcGFzcw==")
        assert code == 502


def test_starttls_command_without_tls_is_454(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.ehlo()
        assert client.docmd("STARTTLS")[0] == 454


def test_ehlo_toggles(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(pipelining=True, smtputf8=False, size=None, hostname="mx.test")
    with connect(server) as client:
        assert features(client) == {"8bitmime", "pipelining", "help"}
        assert client.ehlo_resp is not None
        assert client.ehlo_resp.startswith(b"mx.test")


# -- TLS and AUTH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)],
)
def test_starttls_then_auth(
    smtp_server: SMTPServerFactory,
    client_ssl_context: ssl.SSLContext,
    mechanism: str,
    initial_response: bool,
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    with connect(server) as client:
        assert "starttls" in features(client)
        client.starttls(context=client_ssl_context)
        assert "starttls" not in features(client)
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        client.user, client.password = USER, PASSWORD
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert code == 235
        client.sendmail(SENDER, [RCPT], RAW)

    [received] = server.wait_for_messages(1)
    assert received.tls is True
    assert received.auth_user == USER
    verbs = [c.split()[0].upper() for c in server.commands]
    assert verbs.index("STARTTLS") < verbs.index("AUTH")


def test_implicit_tls(smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext) -> None:
    # auth_require_tls is satisfied by implicit TLS.
    server = smtp_server(tls="ssl", auth=True, auth_require_tls=True)
    with smtplib.SMTP_SSL(server.host, server.port, context=client_ssl_context) as client:
        assert "starttls" not in features(client)
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RCPT], RAW)
    [received] = server.wait_for_messages(1)
    assert (received.tls, received.auth_user) == (True, USER)


def test_implicit_tls_with_ca_file(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    context = ssl.create_default_context(cafile=str(certs.ca_pem_path()))
    with smtplib.SMTP_SSL("localhost", server.port, context=context) as client:
        assert client.noop()[0] == 250


def test_untrusted_client_fails_handshake(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(server.host, server.port, context=ssl.create_default_context())


def test_wrong_password_is_535(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login(USER, "wrong")
        assert excinfo.value.smtp_code == 535


def test_custom_users_and_single_mechanism(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, users={"bob": "pw"}, auth_mechanisms=["login"])
    with connect(server) as client:
        assert features(client) >= {"auth"}
        assert client.esmtp_features["auth"].strip() == "LOGIN"
        client.login("bob", "pw")
        client.sendmail(SENDER, [RCPT], RAW)
    assert server.wait_for_messages(1)[0].auth_user == "bob"


def test_auth_require_tls_refuses_auth_before_starttls(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    with connect(server) as client:
        assert "auth" not in features(client)
        code, _ = client.docmd("AUTH", "PLAIN AHVzZXJAZXhhbXBsZS5jb20AczNjcmV0LXBhc3M=")
        assert code == 538
        client.starttls(context=client_ssl_context)
        client.login(USER, PASSWORD)


def test_auth_allowed_in_plaintext_by_default(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True)
    with connect(server) as client:
        assert {"auth", "starttls"} <= features(client)
        client.login(USER, PASSWORD)


def test_require_auth(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, require_auth=True)
    with connect(server) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 530
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RCPT], RAW)
    server.wait_for_messages(1)


def test_require_starttls(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", require_starttls=True)
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<a@example.com>")[0] == 530
        client.starttls(context=client_ssl_context)
        client.sendmail(SENDER, [RCPT], RAW)
    server.wait_for_messages(1)


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["none", "ssl"])
def test_greeting_fault(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, tls: str
) -> None:
    server = smtp_server(tls="ssl" if tls == "ssl" else "none", faults=Faults(greeting_code=421))

    def open_client() -> smtplib.SMTP:
        if tls == "ssl":
            return smtplib.SMTP_SSL(server.host, server.port, context=client_ssl_context)
        return connect(server)

    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        open_client()
    assert excinfo.value.smtp_code == 421
    assert excinfo.value.smtp_error == b"Service not available"
    server.faults.greeting_code = None
    with open_client() as client:
        assert client.noop()[0] == 250
    assert server.connections == 2


def test_transient_failures_then_success(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.transient_failures = 2
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            send_raw(plain_smtp)
        assert excinfo.value.smtp_code == 451
        assert excinfo.value.smtp_error == b"4.3.0 Temporary failure"
    send_raw(plain_smtp)

    assert len(plain_smtp.wait_for_messages(1)) == 1
    assert len(plain_smtp.rejected) == 2
    assert plain_smtp.faults.transient_failures == 0
    assert [c.upper() for c in plain_smtp.commands].count("DATA") == 3


def test_permanent_failure(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.permanent_failure = True
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            send_raw(plain_smtp)
        assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (
            554,
            b"5.7.1 Message rejected",
        )
    assert plain_smtp.messages == []
    assert len(plain_smtp.rejected) == 2
    plain_smtp.faults.permanent_code = 550
    with pytest.raises(smtplib.SMTPDataError) as excinfo:
        send_raw(plain_smtp)
    assert excinfo.value.smtp_code == 550


def test_mail_from_transient_451_keeps_session(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.mail_from_transient = 1
    with connect(plain_smtp) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 451
        client.sendmail(SENDER, [RCPT], RAW)
    plain_smtp.wait_for_messages(1)


def test_mail_from_transient_421_closes(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults = Faults(mail_from_transient=1, mail_from_transient_code=421)
    with connect(plain_smtp) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 421
        # smtplib itself closes the connection after a 421.
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    send_raw(plain_smtp)
    plain_smtp.wait_for_messages(1)


def test_refused_recipients(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.refuse_recipients = {
        "nobody@example.com": (550, "5.1.1 No such user"),
        "Later@Example.com": (450, "4.2.1 Try later"),
    }
    with connect(plain_smtp) as client:
        refused = client.sendmail(SENDER, [RCPT, "nobody@example.com", "later@example.com"], RAW)
        assert refused == {
            "nobody@example.com": (550, b"5.1.1 No such user"),
            "later@example.com": (450, b"4.2.1 Try later"),
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["nobody@example.com"], RAW)
    [received] = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == [RCPT]


def test_drop_in_data(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.drop_in_data = 1
    with connect(plain_smtp) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, [RCPT], RAW)
    assert plain_smtp.faults.drop_in_data == 0
    assert plain_smtp.messages == plain_smtp.rejected == []
    send_raw(plain_smtp)
    plain_smtp.wait_for_messages(1)


def test_drop_after_messages(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.drop_after_messages = 2
    with connect(plain_smtp) as client:
        client.sendmail(SENDER, [RCPT], RAW)
        client.sendmail(SENDER, [RCPT], RAW)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail(SENDER, [RCPT], RAW)
    # A fresh connection gets its own budget.
    send_raw(plain_smtp)
    assert len(plain_smtp.wait_for_messages(3)) == 3
    assert plain_smtp.connections == 2


def test_delay_reply_lets_client_time_out(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.delay_reply_seconds = 30
    client = smtplib.SMTP(plain_smtp.host, plain_smtp.port, timeout=0.2)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.sendmail(SENDER, [RCPT], RAW)
    finally:
        client.close()


# -- helpers and lifecycle ------------------------------------------------------------------------


def test_wait_for_messages_reports_what_arrived(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.permanent_failure = True
    with pytest.raises(smtplib.SMTPDataError):
        send_raw(plain_smtp)
    with pytest.raises(AssertionError, match=r"(?s)got 0.*rejected: <from='sender@example"):
        plain_smtp.wait_for_messages(1, timeout=0.05)


def test_closed_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=5).close()


def test_stop_aborts_open_connections() -> None:
    server = SMTPTestServer(tls="starttls").start()
    plain = connect(server)
    tls = connect(server)
    tls.starttls(context=certs.client_ssl_context())
    idle = socket.create_connection(server.address)  # never speaks
    try:
        server.stop()
        server.stop()  # idempotent
        for client in (plain, tls):
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
    finally:
        for client in (plain, tls):
            client.close()
        idle.close()


def test_restart_after_stop() -> None:
    server = SMTPTestServer()
    with server:
        send_raw(server)
    with server:
        send_raw(server)
    assert len(server.messages) == 2


def test_stop_during_pending_tls_handshake() -> None:
    server = SMTPTestServer(tls="ssl").start()
    with socket.create_connection(server.address):  # no ClientHello ever
        server.stop()


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="tls"):
        SMTPTestServer(tls="tls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth_mechanisms"):
        SMTPTestServer(auth=True, auth_mechanisms=["DIGEST-MD5"])
    with pytest.raises(ValueError, match="auth_mechanisms"):
        SMTPTestServer(auth=True, auth_mechanisms=[])
    with pytest.raises(ValueError, match="require_starttls"):
        SMTPTestServer(require_starttls=True)
    with pytest.raises(ValueError, match="tls_max_version needs"):
        SMTPTestServer(tls_max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ValueError, match="tls_max_version must be"):
        SMTPTestServer(tls="ssl", tls_max_version="TLSv1.2")  # type: ignore[arg-type]


async def test_usable_from_asyncio_tests() -> None:
    # The server has its own loop, so it neither needs nor blocks the test's loop.
    with SMTPTestServer() as server:
        await asyncio.to_thread(send_raw, server)
        [received] = await asyncio.to_thread(server.wait_for_messages, 1)
    assert received.message["Subject"] == "Hello"
