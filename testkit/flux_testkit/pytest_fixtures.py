"""Pytest fixtures around :class:`flux_testkit.smtpd.SMTPTestServer`.

Enable them in a test suite's top-level ``conftest.py`` with either::

    pytest_plugins = ["flux_testkit.pytest_fixtures"]

or by importing the fixture functions (ruff: ``# noqa: F401``)::

    from flux_testkit.pytest_fixtures import client_ssl_context, plain_smtp, smtp_server

Test modules should then import ``SMTPServerFactory`` (for annotations) only under
``TYPE_CHECKING`` unless the plugin is already registered, or pytest warns that it cannot
rewrite the module's asserts.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Protocol, Unpack

import pytest

from flux_testkit import certs
from flux_testkit.smtpd import ServerOptions, SMTPTestServer

__all__ = ["SMTPServerFactory", "client_ssl_context", "plain_smtp", "smtp_server"]


class SMTPServerFactory(Protocol):
    """Type of the ``smtp_server`` fixture: takes :class:`SMTPTestServer`'s keyword arguments."""

    def __call__(self, **options: Unpack[ServerOptions]) -> SMTPTestServer: ...


@pytest.fixture
def smtp_server() -> Iterator[SMTPServerFactory]:
    """Factory of started servers: ``smtp_server(tls="starttls", auth=True)``.

    Every server it made is stopped when the test ends (call it several times for several
    servers).
    """
    started: list[SMTPTestServer] = []

    def factory(**options: Unpack[ServerOptions]) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def plain_smtp() -> Iterator[SMTPTestServer]:
    """A started plaintext server (``tls="none"``, no AUTH), stopped at the end of the test."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def client_ssl_context() -> ssl.SSLContext:
    """A client context trusting the testkit CA (new per test, so tests may modify it)."""
    return certs.client_ssl_context()
