"""Fixtures for FluxMail's tests: real SMTP servers on loopback from the shared testkit."""

from __future__ import annotations

import pytest

from flux_testkit.pytest_fixtures import (  # noqa: F401 - fixtures are used by name
    client_ssl_context,
    plain_smtp,
    smtp_server,
)
from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail

PASSWORD = "s3cret-pass"
USER = "user@example.com"


@pytest.fixture
def mailer(plain_smtp: SMTPTestServer) -> FluxMail:  # noqa: F811 - the fixture, by name
    """A FluxMail pointed at the plain test server, with a default sender."""
    return FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="from@example.com")
