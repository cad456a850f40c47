"""The public surface is a contract: these names and signatures change only on purpose."""

from __future__ import annotations

import inspect
import subprocess
import sys

import fluxmail
from fluxmail import FluxMail


def test_public_names() -> None:
    from fluxmail import (  # noqa: F401 - importability is the test
        BulkSender,
        EmailInstance,
        EmailObject,
        EmailTemplate,
        FluxMail,
        FluxMailException,
        __version__,
    )
    from fluxmail.backends.django import FluxMailBackend  # noqa: F401
    from fluxmail.testing import capture  # noqa: F401

    assert sorted(fluxmail.__all__) == sorted(
        [
            "AsyncSMTPPool", "AuthError", "BulkSender", "EmailInstance", "EmailObject",
            "EmailTemplate", "FluxMail", "FluxMailException", "MessageTemplate", "PoolOptions",
            "RateLimit", "RecipientsRefused", "Reply", "SMTPConnectError", "SMTPPool",
            "SMTPReplyError", "SMTPTimeoutError", "SendResult", "TLSError", "Unconfirmed",
            "__version__", "format_address", "is_email", "parse_address",
        ]
    )  # fmt: skip


def test_constructor_signature() -> None:
    params = inspect.signature(FluxMail).parameters
    positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [
        ("object_type", inspect.Parameter.empty),
        ("host", inspect.Parameter.empty),
        ("logger", None),
        ("log_level", "WARNING"),
        ("port", 25),
        ("username", None),
        ("password", None),
        ("use_tls", False),
        ("use_ssl", False),
        ("ssl_context", None),
        ("timeout", 30),
        ("max_retries", 0),
        ("retry_delay", 1.0),
    ]
    assert params["sender"].default is None


def test_create_signature() -> None:
    params = inspect.signature(FluxMail.create).parameters
    names = [p.name for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert names == [
        "self", "subject", "recipients", "body", "sender", "cc", "bcc", "reply_to",
        "attachments", "html_body", "plain_body", "in_reply_to", "references", "priority",
        "unsubscribe_url", "inline_images", "inline_css",
    ]  # fmt: skip


def test_address_helpers_round_trip() -> None:
    from fluxmail import format_address, is_email, parse_address

    written = format_address('Acme, "Inc."', "hello@example.com")
    assert written == '"Acme, \\"Inc.\\"" <hello@example.com>'
    parsed = parse_address(written)
    assert (parsed.display_name, parsed.addr_spec) == ('Acme, "Inc."', "hello@example.com")
    assert format_address(None, "a@example.com") == "a@example.com"
    assert is_email("a@example.com")
    assert not is_email("a@example.com\r\nBcc: x@y.z")


def test_exception_tree_subclasses_the_stdlib() -> None:
    assert issubclass(fluxmail.SMTPConnectError, ConnectionError)
    assert issubclass(fluxmail.SMTPTimeoutError, TimeoutError)
    for name in ("SMTPConnectError", "SMTPTimeoutError", "TLSError", "AuthError", "SMTPReplyError"):
        assert issubclass(getattr(fluxmail, name), fluxmail.FluxMailException)


def test_python_dash_m_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fluxmail", "--version"], capture_output=True, text=True, check=True
    )
    assert fluxmail.__version__ in out.stdout
