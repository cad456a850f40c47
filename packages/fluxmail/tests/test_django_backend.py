"""The Django email backend against a real SMTP server (``flux_testkit.smtpd``).

The server fixtures (``plain_smtp``, ``smtp_server``, ``client_ssl_context``) come from the
testkit through ``conftest.py``.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.test import override_settings
from django.utils.translation import gettext_lazy

from flux_testkit import certs
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import FluxMailException, SMTPConnectError, SMTPReplyError
from fluxmail.backends.django import DEFAULT_TIMEOUT, FluxMailBackend

# Configure Django once per process, whichever Django test module gets imported first.
if not settings.configured:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_testkit.django_settings")
django.setup()

BACKEND = "fluxmail.backends.django.FluxMailBackend"
USER, PASSWORD = "user@example.com", "s3cret-pass"


@contextmanager
def email_settings(server: SMTPTestServer, **extra: Any) -> Iterator[None]:
    """Point Django's mail at ``server`` through FluxMailBackend, with fast retries."""
    values: dict[str, Any] = {
        "EMAIL_BACKEND": BACKEND,
        "EMAIL_HOST": server.host,
        "EMAIL_PORT": server.port,
        "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "",
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
        "EMAIL_FLUXMAIL_RETRY_DELAY": 0,
        "DEFAULT_FROM_EMAIL": "webmaster@example.com",
    }
    with override_settings(**{**values, **extra}):
        yield


def data_commands(server: SMTPTestServer) -> int:
    return sum(1 for line in server.commands if line.upper() == "DATA")


def make_message(n: int, to: str = "to@example.com") -> EmailMessage:
    return EmailMessage(f"Message {n}", f"Body {n}", "from@example.com", [to])


# -- what arrives ---------------------------------------------------------------------------


def test_send_mail_arrives(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp):
        sent = mail.send_mail("Hello", "Hi there", "from@example.com", ["to@example.com"])
    assert sent == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    assert received.message["Subject"] == "Hello"
    assert received.message["From"] == "from@example.com"
    assert received.message["To"] == "to@example.com"
    assert received.message.get_content().strip() == "Hi there"
    assert received.data.endswith(b"\r\n")
    assert b"\n" not in received.data.replace(b"\r\n", b"")  # CRLF only


def test_sender_defaults_to_default_from_email(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp, DEFAULT_FROM_EMAIL="Site <noreply@example.com>"):
        assert mail.send_mail("Hello", "Hi", None, ["to@example.com"]) == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "noreply@example.com"
    assert received.message["From"].addresses[0].display_name == "Site"


def test_display_names_stay_in_headers_envelope_gets_bare_addresses(
    plain_smtp: SMTPTestServer,
) -> None:
    message = EmailMessage(
        "Names",
        "Body",
        "Ada Lovelace <ada@example.com>",
        ['"Babbage, Charles" <charles@example.com>', "Grace Hopper <grace@example.com>"],
    )
    with email_settings(plain_smtp):
        assert message.send() == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "ada@example.com"
    assert received.rcpt_tos == ["charles@example.com", "grace@example.com"]
    names = [a.display_name for a in received.message["To"].addresses]
    assert names == ["Babbage, Charles", "Grace Hopper"]


def test_cc_bcc_attachments_and_alternatives(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    image = tmp_path / "logo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    message = EmailMultiAlternatives(
        subject="Quarterly report",
        body="Plain text version",
        from_email="from@example.com",
        to=["to@example.com"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com", "secret@example.com"],
        reply_to=["replies@example.com"],
        headers={"X-Campaign": "q3"},
    )
    message.attach_alternative("<p>HTML <b>version</b></p>", "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    message.attach_file(str(image))
    with email_settings(plain_smtp):
        assert message.send() == 1

    [received] = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == [
        "to@example.com",
        "cc@example.com",
        "hidden@example.com",
        "secret@example.com",
    ]
    # Blind copies are in the envelope only: no header, no address anywhere in the data.
    assert b"hidden@example.com" not in received.data
    assert b"secret@example.com" not in received.data
    assert "Bcc" not in received.message
    msg = received.message
    assert msg["Cc"] == "cc@example.com"
    assert msg["Reply-To"] == "replies@example.com"
    assert msg["X-Campaign"] == "q3"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().strip() == "Plain text version"
    assert html.get_content().strip() == "<p>HTML <b>version</b></p>"
    attachments = {part.get_filename(): part for part in msg.iter_attachments()}
    assert set(attachments) == {"report.csv", "logo.png"}
    assert attachments["report.csv"].get_content_type() == "text/csv"
    assert attachments["report.csv"].get_content().replace("\r\n", "\n") == "a,b\n1,2\n"
    assert attachments["logo.png"].get_content() == image.read_bytes()


def test_non_ascii_and_leading_dots_arrive_intact(plain_smtp: SMTPTestServer) -> None:
    body = "Grüße aus Köln\n.a line starting with a dot\n.\nthe line above is a lone dot\n"
    message = EmailMessage("Grüße 👋", body, "Jürgen <from@example.com>", ["to@example.com"])
    with email_settings(plain_smtp):
        assert message.send() == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert received.message["Subject"] == "Grüße 👋"
    assert received.message["From"].addresses[0].display_name == "Jürgen"
    assert received.message.get_content().replace("\r\n", "\n") == body


def test_fluxmail_writes_the_message_not_djangos_builder(
    plain_smtp: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from email import encoders
    from email.mime.base import MIMEBase

    from flux_testkit.mime_reader import read_message

    def refuse(self: EmailMessage) -> Any:
        raise AssertionError("Django's message() built the message")

    monkeypatch.setattr(EmailMessage, "message", refuse)  # EmailMultiAlternatives inherits it
    pdf = MIMEBase("application", "pdf")
    pdf.set_payload(b"%PDF-1.4 made by the caller")
    encoders.encode_base64(pdf)
    pdf.add_header("Content-Disposition", "attachment", filename="caller.pdf")
    message = EmailMultiAlternatives(
        subject="Grüße =?utf-8?q?not_an_encoded_word?=",
        body="Plain text, ünïcode\n.a leading dot\n",
        from_email="Jürgen Ö <from@example.com>",
        to=['"Babbage, Charles" <charles@example.com>', "To Example <to@漢字.example.com>"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["Replies <replies@example.com>"],
        headers={"X-Campaign": "q3 ✓", "Message-ID": "<fixed@example.com>"},
    )
    message.attach_alternative("<p>HTML <b>ünïcode</b></p>", "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    message.attach("données.bin", bytes(range(256)), "application/octet-stream")
    message.attach(pdf)
    with email_settings(plain_smtp):
        assert message.send() == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == [
        "charles@example.com",
        "to@xn--p8s937b.example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    assert b"hidden@example.com" not in received.data
    # Read back by the email package and by the test kit's own reader, alike.
    msg, strict = received.message, read_message(received.data)
    for subject in (msg["Subject"], strict.text("Subject")):
        assert subject == "Grüße =?utf-8?q?not_an_encoded_word?="
    assert strict.addresses("From") == [("Jürgen Ö", "from@example.com")]
    assert strict.addresses("To") == [
        ("Babbage, Charles", "charles@example.com"),
        ("To Example", "to@xn--p8s937b.example.com"),
    ]
    assert [a.display_name for a in msg["To"].addresses] == ["Babbage, Charles", "To Example"]
    assert strict.addresses("Reply-To") == [("Replies", "replies@example.com")]
    assert (msg["Cc"], msg["X-Campaign"], msg["Message-ID"]) == (
        "cc@example.com",
        "q3 ✓",
        "<fixed@example.com>",
    )
    names = Counter(name.lower() for name, _ in strict.headers)
    assert names["message-id"] == names["date"] == names["subject"] == 1
    assert "bcc" not in names
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n") == message.body
    assert html.get_content().strip() == "<p>HTML <b>ünïcode</b></p>"
    files = {p.filename: p.content for p in strict.leaves() if p.disposition}
    assert files == {
        "report.csv": b"a,b\r\n1,2\r\n",
        "données.bin": bytes(range(256)),
        "caller.pdf": b"%PDF-1.4 made by the caller",
    }
    lenient = {p.get_filename(): p.get_payload(decode=True) for p in msg.iter_attachments()}
    assert lenient.pop("report.csv").replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    assert lenient == {name: data for name, data in files.items() if name != "report.csv"}


def test_what_the_writer_cannot_express_is_built_by_django(plain_smtp: SMTPTestServer) -> None:
    class Stamped(EmailMessage):
        def message(self, **kwargs: Any) -> Any:  # a subclass's override must still run
            msg = super().message(**kwargs)
            msg["X-Stamped"] = "yes"
            return msg

    latin = EmailMessage("Latin", "Grüße", "from@example.com", ["to@example.com"])
    latin.encoding = "iso-8859-1"  # the writer writes UTF-8 only
    with email_settings(plain_smtp):
        assert Stamped("Stamped", "Body", "from@example.com", ["to@example.com"]).send() == 1
        assert latin.send() == 1
    stamped, latin_received = plain_smtp.wait_for_messages(2)
    assert stamped.message["X-Stamped"] == "yes"
    assert latin_received.message.get_content_charset() == "iso-8859-1"
    assert latin_received.message.get_content().strip() == "Grüße"


def test_extra_headers_replace_what_is_shown_not_the_envelope(plain_smtp: SMTPTestServer) -> None:
    message = EmailMessage(
        "Shown", "Body", "from@example.com", ["real@example.com"],
        headers={"To": "Everyone <list@example.com>", "From": "Desk <desk@example.com>"},
    )  # fmt: skip
    with email_settings(plain_smtp):
        assert message.send() == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert (received.mail_from, received.rcpt_tos) == ("from@example.com", ["real@example.com"])
    assert received.message["To"] == "Everyone <list@example.com>"
    assert received.message["From"] == "Desk <desk@example.com>"


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", "Hi\r\nBcc: victim@example.com"), ("header", "x\nBcc: victim@example.com")],
)
def test_a_line_break_in_a_header_is_djangos_bad_header_error(
    plain_smtp: SMTPTestServer, field: str, value: str
) -> None:
    from django.core.mail import BadHeaderError

    message = EmailMessage("Subject", "Body", "from@example.com", ["to@example.com"])
    if field == "subject":
        message.subject = value
    else:
        message.extra_headers["X-Note"] = value
    with email_settings(plain_smtp), pytest.raises(BadHeaderError):
        message.send(fail_silently=True)  # never silenced, as with Django's backend
    assert plain_smtp.messages == []


def test_message_without_recipients_is_skipped(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp):
        backend = get_connection()
        assert backend.send_messages([]) == 0
        assert backend.send_messages([EmailMessage("Nobody", "Body", "from@example.com")]) == 0
    # As Django's backend: the call connects (open()), but sends nothing.
    assert "DATA" not in plain_smtp.commands
    assert plain_smtp.messages == []


# -- connections ----------------------------------------------------------------------------


def test_open_connection_is_shared_by_several_send_messages(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp):
        backend = get_connection()
        assert backend.open() is True
        assert backend.open() is False  # already open: the caller does not own it
        assert backend.send_messages([make_message(1), make_message(2)]) == 2
        assert backend.send_messages([make_message(3)]) == 1
        backend.close()
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(3)] == [
        "Message 1",
        "Message 2",
        "Message 3",
    ]
    assert plain_smtp.connections == 1
    assert plain_smtp.commands.count("QUIT") == 1


def test_backend_as_context_manager_holds_one_connection(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp), get_connection() as backend:
        for n in range(3):
            mail.send_mail(f"Message {n}", "Body", None, ["to@example.com"], connection=backend)
    plain_smtp.wait_for_messages(3)
    assert plain_smtp.connections == 1


def test_send_mass_mail_uses_one_connection(plain_smtp: SMTPTestServer) -> None:
    batch = tuple((f"Message {n}", "Body", None, [f"to{n}@example.com"]) for n in range(4))
    with email_settings(plain_smtp):
        assert mail.send_mass_mail(batch) == 4
    assert len(plain_smtp.wait_for_messages(4)) == 4
    assert plain_smtp.connections == 1


def test_each_call_opens_its_own_connection_when_not_opened(
    plain_smtp: SMTPTestServer,
) -> None:
    with email_settings(plain_smtp):
        backend = get_connection()
        assert backend.send_messages([make_message(1)]) == 1
        assert backend.send_messages([make_message(2)]) == 1
    assert isinstance(backend, FluxMailBackend)
    assert not backend.mailer.in_context  # closed again after each call
    plain_smtp.wait_for_messages(2)
    assert plain_smtp.connections == 2
    assert plain_smtp.commands.count("QUIT") == 2


def test_threads_take_turns_on_one_connection(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp), get_connection() as backend:
        results: list[int] = []

        def worker(n: int) -> None:
            results.append(backend.send_messages([make_message(n)]))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [1] * 8
    assert len(plain_smtp.wait_for_messages(8)) == 8
    assert plain_smtp.connections == 1


# -- TLS and AUTH from settings -------------------------------------------------------------


def test_starttls_and_auth_from_settings(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True, require_auth=True)
    with email_settings(
        server,
        EMAIL_USE_TLS=True,
        EMAIL_HOST_USER=USER,
        EMAIL_HOST_PASSWORD=PASSWORD,
        EMAIL_FLUXMAIL_SSL_CONTEXT=certs.client_ssl_context(),
    ):
        assert mail.send_mail("Secure", "Body", "from@example.com", ["to@example.com"]) == 1
    [received] = server.wait_for_messages(1)
    assert received.tls
    assert received.auth_user == USER
    verbs = [line.split()[0].upper() for line in server.commands]
    assert verbs.index("STARTTLS") < verbs.index("AUTH")  # the password went encrypted


def test_ssl_context_keyword_overrides_the_setting(
    smtp_server: SMTPServerFactory,
    client_ssl_context: ssl.SSLContext,
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    untrusting = ssl.create_default_context()  # would fail: it does not know the test CA
    with email_settings(server, EMAIL_FLUXMAIL_SSL_CONTEXT=untrusting):
        backend = get_connection(
            use_tls=True, username=USER, password=PASSWORD, ssl_context=client_ssl_context
        )
        assert backend.send_messages([make_message(1)]) == 1
    assert server.wait_for_messages(1)[0].auth_user == USER


def test_implicit_tls_from_settings(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    with email_settings(
        server, EMAIL_USE_SSL=True, EMAIL_FLUXMAIL_SSL_CONTEXT=certs.client_ssl_context()
    ):
        assert mail.send_mail("Implicit", "Body", None, ["to@example.com"]) == 1
    assert server.wait_for_messages(1)[0].tls


def test_certificate_is_verified(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls")
    # No ssl_context: the system CAs, which do not trust the testkit's certificate.
    with email_settings(server, EMAIL_USE_TLS=True), pytest.raises(ssl.SSLError) as info:
        mail.send_mail("Unverified", "Body", None, ["to@example.com"])
    # Raised by open(), as Django's backend raises it; also FluxMail's error with its code.
    assert isinstance(info.value, FluxMailException)
    assert info.value.code == "tls_failed"
    assert server.messages == []


def test_starttls_required_when_asked(plain_smtp: SMTPTestServer) -> None:
    with (
        email_settings(
            plain_smtp, EMAIL_USE_TLS=True, EMAIL_FLUXMAIL_SSL_CONTEXT=certs.client_ssl_context()
        ),
        pytest.raises(FluxMailException),
    ):
        mail.send_mail("No STARTTLS", "Body", None, ["to@example.com"])
    assert plain_smtp.messages == []


def test_wrong_password(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    with email_settings(server, EMAIL_HOST_USER=USER, EMAIL_HOST_PASSWORD="wrong"):
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            mail.send_mail("Denied", "Body", None, ["to@example.com"])
        assert isinstance(info.value, FluxMailException)
        assert info.value.code == "auth_failed"
        assert info.value.smtp_code == 535
        assert mail.send_mail("Denied", "Body", None, ["to@example.com"], fail_silently=True) == 0
    assert server.messages == []


def test_send_mail_auth_arguments(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    with email_settings(server, EMAIL_HOST_USER="someone@example.com"):
        sent = mail.send_mail(
            "Login", "Body", None, ["to@example.com"], auth_user=USER, auth_password=PASSWORD
        )
    assert sent == 1
    assert server.wait_for_messages(1)[0].auth_user == USER


def test_lazy_addresses(plain_smtp: SMTPTestServer) -> None:
    # Django's SMTP backend accepts lazy strings (it force_str()s addresses); so do we, even
    # though django-stubs types the arguments as plain str.
    sender: Any = gettext_lazy("Site <noreply@example.com>")
    to: Any = gettext_lazy("to@example.com")
    with email_settings(plain_smtp):
        assert mail.send_mail("Lazy", "Body", sender, [to]) == 1
    [received] = plain_smtp.wait_for_messages(1)
    assert (received.mail_from, received.rcpt_tos) == ("noreply@example.com", ["to@example.com"])


def test_no_auth_without_a_password(smtp_server: SMTPServerFactory) -> None:
    # Like Django's SMTP backend: a user name alone does not log in.
    server = smtp_server(auth=True)
    with email_settings(server, EMAIL_HOST_USER=USER, EMAIL_HOST_PASSWORD=""):
        assert mail.send_mail("Anonymous", "Body", None, ["to@example.com"]) == 1
    assert server.wait_for_messages(1)[0].auth_user is None
    assert not any(line.upper().startswith("AUTH") for line in server.commands)


# -- retries and failures -------------------------------------------------------------------


def test_transient_failure_is_retried(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=2):
        assert mail.send_mail("Retried", "Body", None, ["to@example.com"]) == 1
    [received] = server.wait_for_messages(1)
    assert received.message["Subject"] == "Retried"
    assert len(server.rejected) == 1
    assert data_commands(server) == 2  # the server saw two attempts


def test_max_retries_keyword_overrides_the_setting(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=2))
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=0):
        backend = get_connection(max_retries=2, retry_delay=0)
        assert backend.send_messages([make_message(1)]) == 1
    assert data_commands(server) == 3


def test_without_retries_a_transient_failure_raises(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    with email_settings(server), pytest.raises(FluxMailException) as info:
        mail.send_mail("Once", "Body", None, ["to@example.com"])
    assert info.value.code == "send_failed"
    assert isinstance(info.value.__cause__, SMTPReplyError)
    assert info.value.__cause__.transient
    assert data_commands(server) == 1


def test_retry_reconnects_a_held_connection(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(drop_in_data=1))
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=1), get_connection() as backend:
        assert backend.send_messages([make_message(1), make_message(2)]) == 2
    assert len(server.wait_for_messages(2)) == 2
    assert server.connections == 2  # the dropped one, then one for the retry and the rest


def test_permanent_failure_raises_without_retrying(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    with (
        email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=3),
        pytest.raises(FluxMailException) as info,
    ):
        mail.send_mail("Rejected", "Body", None, ["to@example.com"])
    assert info.value.code == "send_failed"
    assert isinstance(info.value.__cause__, SMTPReplyError)
    assert info.value.__cause__.reply.code == 554
    assert data_commands(server) == 1


def test_permanent_failure_with_fail_silently_returns_zero(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    with email_settings(server, EMAIL_FLUXMAIL_MAX_RETRIES=3):
        sent = mail.send_mail("Rejected", "Body", None, ["to@example.com"], fail_silently=True)
    assert sent == 0
    assert len(server.rejected) == 1


def test_fail_silently_skips_the_failed_message_and_goes_on(
    smtp_server: SMTPServerFactory,
) -> None:
    refused = {"nobody@example.com": (550, "5.1.1 No such user")}
    server = smtp_server(faults=Faults(refuse_recipients=refused))
    batch = [make_message(1), make_message(2, to="nobody@example.com"), make_message(3)]
    with email_settings(server):
        assert get_connection(fail_silently=True).send_messages(batch) == 2
    assert [m.message["Subject"] for m in server.wait_for_messages(2)] == [
        "Message 1",
        "Message 3",
    ]


def test_a_failure_stops_the_batch_when_not_silent(smtp_server: SMTPServerFactory) -> None:
    refused = {"nobody@example.com": (550, "5.1.1 No such user")}
    server = smtp_server(faults=Faults(refuse_recipients=refused))
    batch = [make_message(1), make_message(2, to="nobody@example.com"), make_message(3)]
    with email_settings(server), pytest.raises(FluxMailException):
        get_connection().send_messages(batch)
    assert [m.message["Subject"] for m in server.messages] == ["Message 1"]


def test_connection_refused(plain_smtp: SMTPTestServer) -> None:
    with email_settings(plain_smtp, EMAIL_PORT=closed_port()):
        with pytest.raises(ConnectionRefusedError) as info:
            mail.send_mail("Nowhere", "Body", None, ["to@example.com"])
        assert isinstance(info.value, SMTPConnectError)
        assert info.value.code == "connection_refused"
        assert mail.send_mail("Nowhere", "Body", None, ["to@example.com"], fail_silently=True) == 0


def test_invalid_address(plain_smtp: SMTPTestServer) -> None:
    def message() -> EmailMessage:  # a fresh one each time: send() caches its connection
        # Django's own example of an address its SMTP backend refuses.
        return EmailMessage("Bad", "Body", "from@example.com", ["to@other.com <to@example.com>"])

    with email_settings(plain_smtp):
        with pytest.raises(ValueError, match="Invalid address") as info:
            message().send()
        assert isinstance(info.value, FluxMailException)
        assert info.value.code == "invalid_email"
        # As with Django's backend, a refused address is an error even with fail_silently.
        with pytest.raises(ValueError, match="Invalid address"):
            message().send(fail_silently=True)
        # Django lets "not an address" through; the envelope check still refuses the spaces.
        spaced = EmailMessage("Bad", "Body", "from@example.com", ["not an address"])
        with pytest.raises(ValueError, match="Invalid envelope address"):
            spaced.send(fail_silently=True)
    assert plain_smtp.messages == []


# -- configuration --------------------------------------------------------------------------


def test_settings_and_their_defaults() -> None:
    # Django's global defaults, plus ours when the project sets nothing.
    with override_settings(
        EMAIL_HOST="mail.example.com",
        EMAIL_PORT=2525,
        EMAIL_HOST_USER=USER,
        EMAIL_HOST_PASSWORD=PASSWORD,
        EMAIL_USE_TLS=True,
        EMAIL_TIMEOUT=None,
    ):
        backend = FluxMailBackend()
    mailer = backend.mailer
    assert (mailer.relay, mailer.port, mailer.username) == ("mail.example.com", 2525, USER)
    assert mailer.use_tls
    assert not mailer.use_ssl
    assert mailer.timeout == DEFAULT_TIMEOUT
    assert (mailer.retry.max_retries, mailer.retry.delay) == (0, 1.0)
    assert mailer.ssl_context is None
    assert not backend.fail_silently


def test_keywords_override_settings() -> None:
    context = ssl.create_default_context()
    with override_settings(
        EMAIL_HOST="settings.example.com",
        EMAIL_PORT=25,
        EMAIL_USE_TLS=False,
        EMAIL_TIMEOUT=10,
        EMAIL_FLUXMAIL_MAX_RETRIES=1,
        EMAIL_FLUXMAIL_RETRY_DELAY=5.0,
    ):
        backend = FluxMailBackend(
            host="kw.example.com",
            port=465,
            username=USER,
            password=PASSWORD,
            use_ssl=True,
            timeout=3,
            max_retries=4,
            retry_delay=0.5,
            ssl_context=context,
            fail_silently=True,
        )
    mailer = backend.mailer
    assert (mailer.relay, mailer.port, mailer.username) == ("kw.example.com", 465, USER)
    assert mailer.use_ssl
    assert mailer.timeout == 3
    assert (mailer.retry.max_retries, mailer.retry.delay) == (4, 0.5)
    assert mailer.ssl_context is context
    assert backend.fail_silently


def test_ipv6_host_is_not_split_at_its_colons() -> None:
    with override_settings(EMAIL_HOST="::1", EMAIL_PORT=587):
        mailer = FluxMailBackend().mailer
    assert (mailer.relay, mailer.port) == ("::1", 587)


def test_tls_and_ssl_together_are_refused() -> None:
    with pytest.raises(FluxMailException) as info:
        FluxMailBackend(use_tls=True, use_ssl=True)
    assert info.value.code == "invalid_config"


def test_bad_retry_setting_is_refused() -> None:
    with (
        override_settings(EMAIL_FLUXMAIL_MAX_RETRIES="three"),
        pytest.raises(FluxMailException) as info,
    ):
        FluxMailBackend()
    assert info.value.code == "invalid_config"


def test_ssl_context_setting_must_be_a_context() -> None:
    with (
        override_settings(EMAIL_FLUXMAIL_SSL_CONTEXT="/etc/ssl/ca.pem"),
        pytest.raises(ImproperlyConfigured, match=r"ssl\.SSLContext"),
    ):
        FluxMailBackend()


def test_client_certificate_settings(tmp_path: Path) -> None:
    leaf = certs.ca().issue_cert("client@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    with override_settings(EMAIL_SSL_CERTFILE=str(cert), EMAIL_SSL_KEYFILE=str(key)):
        backend = FluxMailBackend(use_tls=True)
        assert isinstance(backend.ssl_context, ssl.SSLContext)
        with pytest.raises(ImproperlyConfigured, match="load_cert_chain"):
            FluxMailBackend(ssl_context=ssl.create_default_context())
    # As Django's backend, the files are read when connecting: a missing one fails open().
    backend = FluxMailBackend(ssl_certfile=str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        backend.open()
    assert backend.connection is None
    backend.fail_silently = True
    assert backend.open() is None


def test_importing_the_backend_does_not_touch_settings() -> None:
    code = (
        "import fluxmail.backends.django\n"
        "from django.conf import settings\n"
        "assert not settings.configured, 'settings were read at import'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
