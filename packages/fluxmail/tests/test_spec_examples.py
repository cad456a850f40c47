"""The spec's examples, run as written but pointed at a local relay of the same kind.

Each provider example keeps its TLS mode, port style, username form and sender; only the
host, port and CA are swapped for the local server (a real provider is not reachable here).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer
from fluxmail import EmailInstance, FluxMail


@dataclass
class Provider:
    name: str
    host: str
    port: int
    tls: str
    username: str
    sender: str | None


PROVIDERS = [
    Provider("gmail", "smtp.gmail.com", 587, "starttls", "you@gmail.com", None),
    Provider("outlook365", "smtp.office365.com", 587, "starttls", "you@contoso.com", None),
    Provider("sendgrid", "smtp.sendgrid.net", 465, "ssl", "apikey", "hello@yourdomain.com"),
    Provider("postmark", "smtp.postmarkapp.com", 587, "starttls", "TOKEN", "hi@yourdomain.com"),
    Provider("mailgun", "smtp.mailgun.org", 587, "starttls", "postmaster@mg.example.com", None),
    Provider("ses", "email-smtp.us-east-1.amazonaws.com", 465, "ssl", "AKIAEXAMPLE", "a@b.io"),
]


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
def test_provider_example(
    provider: Provider, smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(
        tls=provider.tls, auth=True, auth_require_tls=True, require_auth=True,
        users={provider.username: "app-password"},
    )  # fmt: skip
    mailer = FluxMail(
        "smtp",
        "localhost",  # stands in for provider.host
        port=server.port,  # stands in for provider.port
        username=provider.username,
        password="app-password",
        use_tls=provider.tls == "starttls",
        use_ssl=provider.tls == "ssl",
        ssl_context=client_ssl_context,
        sender=provider.sender,
    )
    sender = provider.sender or provider.username
    mailer.create("Hello", ["friend@example.com"], "Sent the documented way.").send()
    (received,) = server.wait_for_messages(1)
    assert received.mail_from == sender
    assert received.auth_user == provider.username
    assert received.tls


def test_host_form_examples(plain_smtp: SMTPTestServer) -> None:
    port = plain_smtp.port
    for host in (
        f"{plain_smtp.host}:{port}",
        EmailInstance(plain_smtp.host, "example.com"),
        f"{plain_smtp.host}:example.com",
    ):
        mailer = FluxMail("smtp", host, port=port, sender="a@example.com")
        mailer.create("Host form", ["b@example.com"], "x").send()
    assert len(plain_smtp.wait_for_messages(3)) == 3


def test_from_env_example(plain_smtp: SMTPTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXMAIL_HOST", plain_smtp.host)
    monkeypatch.setenv("FLUXMAIL_PORT", str(plain_smtp.port))
    monkeypatch.setenv("FLUXMAIL_USERNAME", "me@example.com")
    monkeypatch.setenv("FLUXMAIL_MAX_RETRIES", "1")
    monkeypatch.setenv("FLUXMAIL_RETRY_DELAY", "0")
    plain_smtp.faults.transient_failures = 1
    FluxMail.from_env().create("From env", ["b@example.com"], "x").send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "me@example.com"


def test_retries_with_context_manager_example(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=1, drop_after_messages=1))
    with FluxMail(
        "smtp", server.host, port=server.port, max_retries=3, retry_delay=0,
        sender="news@example.com",
    ) as mailer:  # fmt: skip
        for name in ("ada", "grace", "linus"):
            mailer.create(f"Hi {name}", [f"{name}@example.com"], "x").send()
    assert [m.rcpt_tos for m in server.messages] == [
        ["ada@example.com"],
        ["grace@example.com"],
        ["linus@example.com"],
    ]
