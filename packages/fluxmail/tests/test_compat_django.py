"""FluxMailBackend behaves as Django's own SMTP backend where code relies on it.

Each test restates, against the real loopback server, a behaviour of
``django.core.mail.backends.smtp.EmailBackend`` that Django's test suite checks (COMPAT.md
lists the command that runs that suite against this backend, and the tests it cannot pass).
"""

from __future__ import annotations

import os
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import django
import pytest
from django.conf import settings
from django.core import mail
from django.core.mail import EmailMessage
from django.test import override_settings

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import FluxMail, FluxMailException
from fluxmail.backends.django import FluxMailBackend

if not settings.configured:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_testkit.django_settings")
django.setup()


@contextmanager
def pointed_at(server: SMTPTestServer | None, **extra: Any) -> Iterator[None]:
    values: dict[str, Any] = {
        "EMAIL_BACKEND": "fluxmail.backends.django.FluxMailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": server.port if server is not None else closed_port(),
        "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "",
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
        "EMAIL_FLUXMAIL_RETRY_DELAY": 0,
    }
    with override_settings(**(values | extra)):
        yield


def test_open_connects_at_once(plain_smtp: SMTPTestServer) -> None:
    with pointed_at(plain_smtp):
        backend = FluxMailBackend()
        assert backend.connection is None
        assert backend.open() is True
        assert isinstance(backend.connection, FluxMail)
        assert plain_smtp.connections == 1  # before anything was sent
        assert backend.open() is False
        backend.close()
        assert backend.connection is None
        backend.close()  # closing twice is fine
    assert plain_smtp.commands.count("QUIT") == 1


def test_open_reports_a_server_that_is_down() -> None:
    with pointed_at(None):
        backend = FluxMailBackend()
        with pytest.raises(ConnectionError) as info:
            backend.open()
        assert isinstance(info.value, FluxMailException)
        assert backend.connection is None
        backend.fail_silently = True
        assert backend.open() is None  # Django's "failed silently"
        assert backend.connection is None
        assert (
            backend.send_messages([EmailMessage("S", "B", "f@example.com", ["t@example.com"])]) == 0
        )
        backend.close()  # a stopped server: close() does not raise


def test_an_already_set_connection_is_kept() -> None:
    with pointed_at(None):
        backend = FluxMailBackend()
        held = FluxMail("smtp", "127.0.0.1", port=closed_port())
        backend.connection = held
        assert backend.open() is False
        assert backend.connection is held


def test_starttls_refused_at_open(plain_smtp: SMTPTestServer) -> None:
    with pointed_at(plain_smtp, EMAIL_USE_TLS=True):
        backend = FluxMailBackend()
        with pytest.raises(smtplib.SMTPException, match="STARTTLS extension not supported"):
            backend.open()
        assert backend.connection is None


def test_implicit_tls_against_a_plain_server_is_an_ssl_error(plain_smtp: SMTPTestServer) -> None:
    with pointed_at(plain_smtp, EMAIL_USE_SSL=True), pytest.raises(ssl.SSLError):
        FluxMailBackend().open()


def test_login_without_auth_offered(plain_smtp: SMTPTestServer) -> None:
    with pointed_at(plain_smtp):
        backend = FluxMailBackend(username="someone", password="secret")
        with (
            pytest.raises(smtplib.SMTPException, match="SMTP AUTH extension not supported"),
            backend,
        ):
            pass


def test_tls_and_ssl_exclude_each_other_with_djangos_message() -> None:
    with pytest.raises(ValueError, match="EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive"):
        FluxMailBackend(use_tls=True, use_ssl=True)


def test_connection_carries_the_timeout(plain_smtp: SMTPTestServer) -> None:
    with pointed_at(plain_smtp):
        backend = FluxMailBackend(timeout=42)
        assert FluxMailBackend().timeout is None  # Django's default setting
        backend.open()
        try:
            assert backend.connection is not None
            assert backend.connection.timeout == 42
        finally:
            backend.close()


def test_addresses_without_a_domain_are_sent(plain_smtp: SMTPTestServer) -> None:
    # Django sends these (its test_recipient_without_domain); the relay decides.
    with pointed_at(plain_smtp):
        assert mail.send_mail("Subject", "Content", "tester", ["django"]) == 1
    received = plain_smtp.wait_for_messages(1)[0]
    assert (received.mail_from, received.rcpt_tos) == ("tester", ["django"])
    assert (received.message["From"], received.message["To"]) == ("tester", "django")


def test_idna_domains_are_encoded_in_the_envelope(plain_smtp: SMTPTestServer) -> None:
    message = EmailMessage(
        from_email="lists@discussão.example.org",
        to=["To Example <to@漢字.example.com>"],
        bcc=["monitor@discussão.example.org"],
    )
    with pointed_at(plain_smtp):
        assert message.send() == 1
    received = plain_smtp.wait_for_messages(1)[0]
    assert received.mail_from == "lists@xn--discusso-xza.example.org"
    assert received.rcpt_tos == [
        "to@xn--p8s937b.example.com",
        "monitor@xn--discusso-xza.example.org",
    ]


@pytest.mark.parametrize(
    "address",
    [
        "to@other.com <to@example.com>",
        "to@other.com@example.com",
        "@",
        "to@",
        '"evil@example.com\r\nto"@example.com',
        "to\nevil@example.com",
    ],
)
def test_addresses_django_refuses_are_value_errors(
    plain_smtp: SMTPTestServer, address: str
) -> None:
    with pointed_at(plain_smtp):
        backend = FluxMailBackend(fail_silently=True)
        with pytest.raises(ValueError, match="Invalid address"):
            backend.send_messages([EmailMessage(bcc=[address])])
    assert plain_smtp.messages == []


def test_send_failures_are_smtplib_errors(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"no@example.com": (550, "5.1.1 No")}))
    with pointed_at(server):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            mail.send_mail("S", "B", "f@example.com", ["no@example.com"])
        assert info.value.recipients == {"no@example.com": (550, b"5.1.1 No")}
        assert (
            mail.send_mail("S", "B", "f@example.com", ["no@example.com"], fail_silently=True) == 0
        )


def test_partial_refusal_is_quiet_without_logging(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"no@example.com": (550, "5.1.1 No")}))
    code = (
        "from django.conf import settings\n"
        "settings.configure(EMAIL_BACKEND='fluxmail.backends.django.FluxMailBackend',\n"
        f"    EMAIL_HOST='127.0.0.1', EMAIL_PORT={server.port})\n"
        "import django; django.setup()\n"
        "from django.core.mail import send_mail\n"
        "assert send_mail('S', 'B', 'f@example.com', ['to@example.com', 'no@example.com']) == 1\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert server.wait_for_messages(1)[0].rcpt_tos == ["to@example.com"]
