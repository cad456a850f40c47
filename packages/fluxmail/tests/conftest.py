"""Fixtures for FluxMail's tests.

The SMTP server fixtures (``smtp_server``, ``plain_smtp``, ``client_ssl_context``) come from the
shared testkit, loaded for every suite as a pytest plugin (see ``addopts`` in pyproject.toml).
"""

from __future__ import annotations

import pytest

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail

PASSWORD = "s3cret-pass"
USER = "user@example.com"


@pytest.fixture
def mailer(plain_smtp: SMTPTestServer) -> FluxMail:
    """A FluxMail pointed at the plain test server, with a default sender."""
    return FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="from@example.com")
