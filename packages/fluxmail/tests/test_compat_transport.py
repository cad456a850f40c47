"""0.3.x's private ``fluxmail._transport._SMTPTransport`` (an smtplib wrapper), kept for code
that used it directly: really sending through smtplib and aiosmtplib to the loopback server."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any
from unittest import mock

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer
from fluxmail import FluxMail, FluxMailException
from fluxmail._transport import _SMTPTransport

from .conftest import PASSWORD, USER

LOG = logging.getLogger("test_compat_transport")


def transport(server: SMTPTestServer, **settings: Any) -> _SMTPTransport:
    options: dict[str, Any] = {
        "use_ssl": False,
        "use_tls": False,
        "ssl_context": None,
        "timeout": 10,
        "username": None,
        "password": None,
        "logger": LOG,
    }
    options.update(settings)
    return _SMTPTransport(options.pop("relay", "localhost"), server.port, **options)


def message(subject: str, to: str = "to@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "from@example.com", to, subject
    msg.set_content("Hello")
    return msg


def quits(server: SMTPTestServer) -> int:
    return [command.upper() for command in server.commands].count("QUIT")  # smtplib: "quit"


def test_each_send_has_its_own_connection(plain_smtp: SMTPTestServer) -> None:
    sender = transport(plain_smtp)
    sender.send(message("One"))
    sender.send(message("Two"))
    received = plain_smtp.wait_for_messages(2)
    assert [m.message["Subject"] for m in received] == ["One", "Two"]
    assert plain_smtp.connections == 2
    assert quits(plain_smtp) == 2


def test_open_holds_one_connection_until_close(plain_smtp: SMTPTestServer) -> None:
    sender = transport(plain_smtp)
    sender.open()
    sender.send(message("One"))
    sender.send(message("Two"))
    sender.close()
    sender.close()  # closing twice is harmless
    assert len(plain_smtp.wait_for_messages(2)) == 2
    assert plain_smtp.connections == 1
    assert quits(plain_smtp) == 1


def test_starttls_and_login(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True, require_auth=True)
    sender = transport(
        server, use_tls=True, ssl_context=client_ssl_context, username=USER, password=PASSWORD
    )
    sender.send(message("Secure"))
    (received,) = server.wait_for_messages(1)
    assert received.tls
    assert received.auth_user == USER


def test_implicit_tls(smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext) -> None:
    server = smtp_server(tls="ssl")
    transport(server, use_ssl=True, ssl_context=client_ssl_context).send(message("465"))
    assert server.wait_for_messages(1)[0].tls


def test_a_password_never_goes_to_a_remote_host_in_the_clear() -> None:
    # Refused before connecting: nothing listens at smtp.example.com here.
    sender = _SMTPTransport(
        "smtp.example.com",
        587,
        use_ssl=False,
        use_tls=False,
        ssl_context=None,
        timeout=10,
        username=USER,
        password=PASSWORD,
        logger=LOG,
    )
    with (
        mock.patch("fluxmail._transport.smtplib.SMTP") as smtp,
        pytest.raises(smtplib.SMTPException) as error,
    ):
        sender.send(message("Hi"))
    smtp.assert_not_called()
    assert isinstance(error.value, FluxMailException)
    assert error.value.code == "auth_requires_tls"
    assert PASSWORD not in str(error.value)
    assert PASSWORD not in repr(sender)


def test_loopback_may_log_in_without_tls(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, require_auth=True)
    transport(server, relay="127.0.0.1", username=USER, password=PASSWORD).send(message("Local"))
    assert server.wait_for_messages(1)[0].auth_user == USER


def test_errors_are_smtplib_s_own(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"no@example.com": (550, "5.1.1 No")}))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as error:
        transport(server).send(message("Hi", to="no@example.com"))
    assert error.value.recipients["no@example.com"][0] == 550
    assert server.commands[-1].upper() == "QUIT"  # the connection was still closed


def test_failed_login_closes_the_connection(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    sender = transport(server, username=USER, password="wrong")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        sender.open()
    assert sender._conn is None


async def test_send_async_with_aiosmtplib(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    pytest.importorskip("aiosmtplib")
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    sender = transport(
        server, use_tls=True, ssl_context=client_ssl_context, username=USER, password=PASSWORD
    )
    await sender.send_async(message("Async"))
    async with sender.async_connection() as smtp:
        await smtp.send_message(message("Held 1"))
        await smtp.send_message(message("Held 2"))
    received = server.wait_for_messages(3)
    assert [m.message["Subject"] for m in received] == ["Async", "Held 1", "Held 2"]
    assert all(m.tls and m.auth_user == USER for m in received)
    assert server.connections == 2


async def test_async_refuses_a_password_in_the_clear_too() -> None:
    sender = _SMTPTransport(
        "smtp.example.com",
        25,
        use_ssl=False,
        use_tls=False,
        ssl_context=None,
        timeout=10,
        username=USER,
        password=PASSWORD,
        logger=LOG,
    )
    with mock.patch("fluxmail._transport.aiosmtplib.send") as send:
        with pytest.raises(FluxMailException, match="unencrypted"):
            await sender.send_async(message("Hi"))
        with pytest.raises(FluxMailException, match="unencrypted"):
            async with sender.async_connection():
                pass
    send.assert_not_called()


def test_replacing_aiosmtplib_send_leaves_fluxmail_s_sessions_alone(
    plain_smtp: SMTPTestServer,
) -> None:
    # aiosmtplib.send is _SMTPTransport's patch point only: FluxMail still sends for real.
    with mock.patch("fluxmail._transport.aiosmtplib.send") as send:
        FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com").create(
            "Real", ["to@example.com"], "B"
        ).send()
    send.assert_not_called()
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(1)] == ["Real"]
