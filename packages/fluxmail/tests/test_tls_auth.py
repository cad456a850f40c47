"""TLS modes and authentication against real servers, and where a password may never go."""

from __future__ import annotations

import logging
import ssl

import pytest

from flux_testkit.netguard import unresolvable_names
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import closed_port
from fluxmail import FluxMail, FluxMailException

from .conftest import PASSWORD, USER


def tls_mailer(server, ctx: ssl.SSLContext, **kwargs) -> FluxMail:
    return FluxMail(
        "smtp", "localhost", port=server.port, ssl_context=ctx, sender="from@example.com",
        **kwargs,
    )  # fmt: skip


def test_starttls_with_auth_plain(smtp_server: SMTPServerFactory, client_ssl_context) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True, require_auth=True)
    mailer = tls_mailer(server, client_ssl_context, use_tls=True, username=USER, password=PASSWORD)
    mailer.create("Secure", ["to@example.com"], "hi").send()
    (received,) = server.wait_for_messages(1)
    assert received.tls
    assert received.auth_user == USER
    starttls = server.commands.index("STARTTLS")
    auth = next(i for i, c in enumerate(server.commands) if c.startswith("AUTH"))
    assert starttls < auth  # the password only ever travelled inside TLS


def test_auth_login_mechanism(smtp_server: SMTPServerFactory, client_ssl_context) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_mechanisms=["LOGIN"])
    mailer = tls_mailer(server, client_ssl_context, use_tls=True, username=USER, password=PASSWORD)
    mailer.create("Login", ["to@example.com"], "hi").send()
    assert server.wait_for_messages(1)[0].auth_user == USER
    assert "AUTH LOGIN" in server.commands


def test_implicit_tls(smtp_server: SMTPServerFactory, client_ssl_context) -> None:
    server = smtp_server(tls="ssl", auth=True)
    mailer = tls_mailer(server, client_ssl_context, use_ssl=True, username=USER, password=PASSWORD)
    mailer.create("465", ["to@example.com"], "hi").send()
    (received,) = server.wait_for_messages(1)
    assert received.tls
    assert "STARTTLS" not in server.commands


async def test_async_starttls_and_implicit_tls(
    smtp_server: SMTPServerFactory, client_ssl_context
) -> None:
    for mode, flag in (("starttls", "use_tls"), ("ssl", "use_ssl")):
        server = smtp_server(tls=mode, auth=True, auth_require_tls=True)
        mailer = tls_mailer(
            server, client_ssl_context, username=USER, password=PASSWORD, **{flag: True}
        )
        await mailer.create("Async TLS", ["to@example.com"], "hi").send_async()
        (received,) = server.wait_for_messages(1)
        assert received.tls
        assert received.auth_user == USER


@pytest.mark.parametrize("use_async", [False, True])
async def test_missing_starttls_fails_instead_of_plaintext_login(
    smtp_server: SMTPServerFactory, use_async: bool
) -> None:
    server = smtp_server(tls="none", auth=True)
    mailer = FluxMail(
        "smtp", server.host, port=server.port, use_tls=True, username=USER, password=PASSWORD
    )
    mailer.create("x", ["to@example.com"], "x")
    with pytest.raises(FluxMailException) as info:
        await mailer.send_async() if use_async else mailer.send()
    assert info.value.code == "send_failed"
    assert getattr(info.value.__cause__, "code", None) == "starttls_not_advertised"
    assert not any(c.startswith(("AUTH", "MAIL")) for c in server.commands)
    assert server.messages == []


def test_untrusted_certificate_is_refused(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls")
    mailer = FluxMail("smtp", "localhost", port=server.port, use_tls=True, sender="a@example.com")
    with pytest.raises(FluxMailException) as info:
        mailer.create("x", ["to@example.com"], "x").send()
    assert getattr(info.value.__cause__, "code", None) == "tls_failed"
    assert server.messages == []


def test_wrong_password(smtp_server: SMTPServerFactory, client_ssl_context, caplog) -> None:
    server = smtp_server(tls="starttls", auth=True)
    wrong = "Wr0ng-Pa55word!"
    mailer = tls_mailer(
        server, client_ssl_context, use_tls=True, username=USER, password=wrong, max_retries=2,
        retry_delay=0, log_level="DEBUG",
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    with pytest.raises(FluxMailException) as info:
        mailer.create("x", ["to@example.com"], "x").send()
    cause = info.value.__cause__
    assert getattr(cause, "code", None) == "auth_failed"
    assert server.connections == 1  # a wrong password is not worth retrying
    for text in (str(info.value), str(cause), repr(cause), repr(mailer), caplog.text):
        assert wrong not in text


def test_password_never_logged(smtp_server: SMTPServerFactory, client_ssl_context, caplog) -> None:
    server = smtp_server(tls="starttls", auth=True)
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    mailer = tls_mailer(
        server, client_ssl_context, use_tls=True, username=USER, password=PASSWORD,
        log_level="DEBUG",
    )  # fmt: skip
    mailer.create("x", ["to@example.com"], "x")
    mailer.send()
    assert "EHLO" in caplog.text  # the conversation really was logged...
    assert "redacted" in caplog.text
    import base64

    secrets = [PASSWORD, base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()]
    for secret in secrets:  # ...but never the password, plain or encoded
        assert secret not in caplog.text
        assert secret not in mailer.display()
        assert secret not in repr(mailer)


def test_plaintext_auth_needs_loopback_or_explicit_consent() -> None:
    remote = FluxMail("smtp", "smtp.example.com", username=USER, password=PASSWORD)
    assert not remote._settings().plan.plaintext_auth
    trusted = FluxMail(
        "smtp", "smtp.example.com", username=USER, password=PASSWORD, allow_plaintext_auth=True
    )
    assert trusted._settings().plan.plaintext_auth
    assert (
        FluxMail("smtp", "localhost", username=USER, password=PASSWORD)
        ._settings()
        .plan.plaintext_auth
    )


def test_plaintext_auth_to_loopback(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    mailer = FluxMail("smtp", server.host, port=server.port, username=USER, password=PASSWORD)
    mailer.create("x", ["to@example.com"], "x").send()
    assert server.wait_for_messages(1)[0].auth_user == USER


def test_test_connection(smtp_server: SMTPServerFactory, client_ssl_context) -> None:
    server = smtp_server(tls="starttls", auth=True)
    mailer = tls_mailer(server, client_ssl_context, use_tls=True, username=USER, password=PASSWORD)
    result = mailer.test_connection()
    assert result["ok"] is True
    assert (result["relay"], result["port"]) == ("localhost", server.port)
    assert isinstance(result["latency_ms"], int)
    assert any(c.startswith("AUTH") for c in server.commands)
    assert not any(c.startswith("MAIL") for c in server.commands)
    assert server.messages == []


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1", "connection_refused"), ("no-such-host.invalid", "dns_failed")],
)
def test_test_connection_failures(host: str, cause: str) -> None:
    mailer = FluxMail("smtp", host, port=closed_port(), timeout=5)
    with unresolvable_names(), pytest.raises(FluxMailException) as info:
        mailer.test_connection()
    assert info.value.code == "connection_failed"
    assert getattr(info.value.__cause__, "code", None) == cause
    assert isinstance(info.value.__cause__, ConnectionError)
