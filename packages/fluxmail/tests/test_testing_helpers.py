"""``fluxmail.testing.capture()``: every way of sending is recorded and nothing connects.

The mailers here point at a port where nothing listens, so a send that escaped the capture
would fail with ``send_failed`` instead of passing unnoticed.
"""

from __future__ import annotations

import os
import threading
from email.message import EmailMessage
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.core import mail
from django.test import override_settings

from flux_testkit.smtpd import closed_port
from fluxmail import BulkSender, FluxMail, FluxMailException, SMTPConnectError
from fluxmail.testing import CapturedEmail, capture

# Configure Django once per process, whichever Django test module gets imported first.
if not settings.configured:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_testkit.django_settings")
django.setup()

SUCCESS = "Email sent successfully via SMTP."


@pytest.fixture
def port() -> int:
    return closed_port()


@pytest.fixture
def offline(port: int) -> FluxMail:
    """A mailer that cannot reach any server (and would retry, were it to try)."""
    return FluxMail(
        "smtp", "127.0.0.1", port=port, sender="from@example.com", max_retries=2, retry_delay=0
    )


def test_nothing_is_sent_outside_a_capture(offline: FluxMail) -> None:
    # The premise of this module: without capture() these mailers really fail.
    with pytest.raises(FluxMailException) as info:
        offline.create("Hi", ["to@example.com"], "Body").send()
    assert info.value.code == "send_failed"
    assert isinstance(info.value.__cause__, SMTPConnectError)


# -- what a captured message holds ----------------------------------------------------------


def test_captured_fields(offline: FluxMail, tmp_path: Path) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 \x00\xff")
    with capture() as outbox:
        result = offline.create(
            "Quarterly report",
            ["To Person <to@example.com>", "other@example.com"],
            "<p>Numbers</p>",
            cc=["cc@example.com"],
            bcc=["hidden@example.com"],
            html_body=True,
            plain_body="Numbers",
            attachments=[str(report)],
        ).send()
    assert result == SUCCESS
    (sent,) = outbox
    assert isinstance(sent, CapturedEmail)
    assert sent.via == "smtp"
    assert sent.subject == "Quarterly report"
    assert sent.sender == "from@example.com"
    assert sent.to == ["to@example.com", "other@example.com"]
    assert sent.cc == ["cc@example.com"]
    assert sent.bcc == ["hidden@example.com"]
    assert sent.recipients == (
        "to@example.com",
        "other@example.com",
        "cc@example.com",
        "hidden@example.com",
    )
    assert sent.text is not None
    assert sent.text.strip() == "Numbers"
    assert sent.html is not None
    assert sent.html.strip() == "<p>Numbers</p>"
    assert sent.attachments == ["report.pdf"]
    (part,) = sent.message.iter_attachments()
    assert part.get_content() == report.read_bytes()


def test_raw_is_the_exact_wire_message(offline: FluxMail) -> None:
    with capture() as outbox:
        offline.create("Raw", ["to@example.com"], "Line one\nLine two", bcc=["b@example.com"])
        offline.send()
    raw = outbox[0].raw
    assert isinstance(raw, bytes)
    assert b"\r\nSubject: Raw\r\n" in raw
    assert b"Message-ID: <" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout, as on the wire
    assert b"Bcc" not in raw
    assert b"b@example.com" not in raw  # blind copies live in the envelope only
    assert outbox[0].message["Subject"] == "Raw"


def test_text_only_message_has_no_html(offline: FluxMail) -> None:
    with capture() as outbox:
        offline.create("Plain", ["to@example.com"], "Just text").send()
    (sent,) = outbox
    assert sent.text is not None
    assert sent.text.strip() == "Just text"
    assert sent.html is None
    assert sent.attachments == []
    assert sent.cc == []
    assert sent.bcc == []


def test_send_message_is_captured_with_bcc_moved_to_the_envelope(offline: FluxMail) -> None:
    message = EmailMessage()
    message["From"] = "from@example.com"
    message["To"] = "to@example.com"
    message["Bcc"] = "hidden@example.com"
    message["Subject"] = "Ready-made"
    message.set_content("Body")
    with capture() as outbox:
        result = offline.send_message(message)
    assert result.accepted == ("to@example.com", "hidden@example.com")
    (sent,) = outbox
    assert sent.bcc == ["hidden@example.com"]
    assert b"hidden@example.com" not in sent.raw
    assert message["Bcc"] == "hidden@example.com"  # the caller's message is left alone


def test_captured_send_reports_every_recipient_accepted(offline: FluxMail) -> None:
    with capture():
        offline.create("Hi", ["a@example.com"], "Body", cc=["b@example.com"]).send()
    assert offline.last_result is not None
    assert offline.last_result.accepted == ("a@example.com", "b@example.com")
    assert offline.last_result.refused == {}


def test_dry_run_and_invalid_input_are_not_captured(offline: FluxMail) -> None:
    with capture() as outbox:
        preview = offline.create("Dry", ["to@example.com"], "Body").send(dry_run=True)
        with pytest.raises(FluxMailException) as info:
            offline.create("", ["to@example.com"], "Body")
    assert preview.startswith("Email Preview:\n")
    assert info.value.code == "invalid_params"
    assert outbox == []


# -- every way of sending -------------------------------------------------------------------


def test_sync_sends_in_order(offline: FluxMail) -> None:
    with capture() as outbox:
        for n in range(3):
            assert offline.create(f"Message {n}", ["to@example.com"], "Body").send() == SUCCESS
    assert [m.subject for m in outbox] == ["Message 0", "Message 1", "Message 2"]


def test_sends_inside_a_held_connection(offline: FluxMail) -> None:
    with capture() as outbox, offline:
        offline.create("One", ["to@example.com"], "Body").send()
        offline.create("Two", ["to@example.com"], "Body").send()
    assert [m.subject for m in outbox] == ["One", "Two"]


async def test_async_sends(offline: FluxMail) -> None:
    with capture() as outbox:
        assert await offline.create("Async", ["to@example.com"], "Body").send_async() == SUCCESS
        async with offline:
            await offline.create("Held", ["to@example.com"], "Body").send_async()
        message = EmailMessage()
        message["From"] = "from@example.com"
        message["To"] = "to@example.com"
        message["Subject"] = "Async ready-made"
        message.set_content("Body")
        await offline.send_message_async(message)
    assert [m.subject for m in outbox] == ["Async", "Held", "Async ready-made"]


def test_bulk_batch(offline: FluxMail) -> None:
    batch = [
        {"subject": f"Batch {n}", "recipients": [f"r{n}@example.com"], "body": "Body"}
        for n in range(5)
    ]
    with capture() as outbox:
        report = BulkSender(offline).send_batch(batch, progress=False)
    assert (report["sent"], report["failed"], report["total"]) == (5, 0, 5)
    assert [m.to for m in outbox] == [[f"r{n}@example.com"] for n in range(5)]


async def test_bulk_batch_async(offline: FluxMail) -> None:
    batch = [
        {"subject": f"Batch {n}", "recipients": [f"r{n}@example.com"], "body": "Body"}
        for n in range(3)
    ]
    with capture() as outbox:
        report = await BulkSender(offline).send_batch_async(batch, progress=False)
    assert report["sent"] == 3
    assert [m.subject for m in outbox] == ["Batch 0", "Batch 1", "Batch 2"]


def test_django_backend(port: int) -> None:
    with (
        override_settings(
            EMAIL_BACKEND="fluxmail.backends.django.FluxMailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
        ),
        capture() as outbox,
    ):
        assert mail.send_mail("Django", "Body", "from@example.com", ["to@example.com"]) == 1
        message = mail.EmailMessage(
            "Django bcc", "Body", "from@example.com", ["to@example.com"], bcc=["b@example.com"]
        )
        assert message.send() == 1
    assert [m.subject for m in outbox] == ["Django", "Django bcc"]
    assert outbox[1].bcc == ["b@example.com"]
    assert b"b@example.com" not in outbox[1].raw


def test_sends_from_other_threads(port: int) -> None:
    def worker(n: int) -> None:
        mailer = FluxMail("smtp", "127.0.0.1", port=port, sender="from@example.com")
        for k in range(5):
            mailer.create(f"Thread {n} message {k}", ["to@example.com"], "Body").send()

    with capture() as outbox:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    subjects = sorted(m.subject for m in outbox)
    assert subjects == sorted(f"Thread {n} message {k}" for n in range(6) for k in range(5))


# -- scope ----------------------------------------------------------------------------------


def test_captures_nest_and_the_innermost_receives(offline: FluxMail) -> None:
    with capture() as outer:
        offline.create("Before", ["to@example.com"], "Body").send()
        with capture() as inner:
            offline.create("Inside", ["to@example.com"], "Body").send()
        offline.create("After", ["to@example.com"], "Body").send()
    assert [m.subject for m in outer] == ["Before", "After"]
    assert [m.subject for m in inner] == ["Inside"]


def test_capture_ends_even_when_the_block_raises(offline: FluxMail) -> None:
    outboxes = []

    def failing_test_body() -> None:
        with capture() as outbox:
            outboxes.append(outbox)
            offline.create("Captured", ["to@example.com"], "Body").send()
            raise RuntimeError("test failure inside the block")

    with pytest.raises(RuntimeError):
        failing_test_body()
    assert [len(outbox) for outbox in outboxes] == [1]
    with pytest.raises(FluxMailException) as info:  # really sends again: and fails
        offline.create("Real", ["to@example.com"], "Body").send()
    assert info.value.code == "send_failed"


def test_each_capture_starts_empty(offline: FluxMail) -> None:
    with capture() as first:
        offline.create("One", ["to@example.com"], "Body").send()
    with capture() as second:
        pass
    assert len(first) == 1
    assert second == []
