"""What reaches a real SMTP server: envelope, headers and MIME structure."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail, FluxMailException

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81"
    b"\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 fake but binary \x00\xff\r\n.\r\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    return {"report": report, "notes": notes, "logo": logo}


def only(server: SMTPTestServer) -> EmailMessage:
    (received,) = server.wait_for_messages(1)
    return received.message


def test_plain_message(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    result = mailer.create("Hello", ["to@example.com"], "Hi there\nSecond line").send()
    assert result == "Email sent successfully via SMTP."
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    msg = received.message
    assert msg["Subject"] == "Hello"
    assert msg["From"] == "from@example.com"
    assert msg["To"] == "to@example.com"
    assert msg["Message-ID"].startswith("<")
    assert msg["Message-ID"].endswith("@example.com>")
    assert msg["Date"]
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().splitlines() == ["Hi there", "Second line"]
    assert mailer.last_result is not None
    assert mailer.last_result.accepted == ("to@example.com",)


def test_cc_bcc_and_reply_to(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create(
        "Team",
        ["Ada Lovelace <ada@example.com>"],
        "body",
        cc=["cc@example.com"],
        bcc=["secret@example.com"],
        reply_to="Support <support@example.com>",
    ).send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == ["ada@example.com", "cc@example.com", "secret@example.com"]
    assert b"secret@example.com" not in received.data
    assert "Bcc" not in received.message
    assert received.message["To"] == "Ada Lovelace <ada@example.com>"
    assert received.message["Cc"] == "cc@example.com"
    assert received.message["Reply-To"] == "Support <support@example.com>"


def test_html_with_plain_alternative(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create(
        "Alt", ["to@example.com"], "<p>Hi <b>you</b></p>", html_body=True, plain_body="Hi you"
    ).send()
    msg = only(plain_smtp)
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert "<b>you</b>" in html.get_content()


def test_attachments_and_inline_images_together(
    mailer: FluxMail, plain_smtp: SMTPTestServer, files: dict[str, Path]
) -> None:
    # The old package crashed on exactly this combination.
    mailer.create(
        "Both",
        ["to@example.com"],
        '<p>Logo: <img src="cid:logo"></p>',
        html_body=True,
        plain_body="Logo attached",
        attachments=[str(files["report"]), str(files["notes"])],
        inline_images={"logo": str(files["logo"])},
    ).send()
    msg = only(plain_smtp)
    assert msg.get_content_type() == "multipart/mixed"
    body, *attached = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    _plain, related = body.iter_parts()
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_type() == "image/png"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    assert [a.get_filename() for a in attached] == ["report.pdf", "notes.txt"]
    assert attached[0].get_content() == files["report"].read_bytes()
    assert attached[1].get_content_type() == "text/plain"


def test_inline_images_without_plain_part(
    mailer: FluxMail, plain_smtp: SMTPTestServer, files: dict[str, Path]
) -> None:
    mailer.create(
        "Img", ["to@example.com"], '<img src="cid:logo">', html_body=True,
        inline_images={"logo": files["logo"]},
    ).send()  # fmt: skip
    msg = only(plain_smtp)
    assert msg.get_content_type() == "multipart/related"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/html", "image/png"]


def test_threading_priority_and_unsubscribe(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create(
        "Re: plan",
        ["to@example.com"],
        "yes",
        in_reply_to="<abc@example.com>",
        references=["<root@example.com>", "<abc@example.com>"],
        priority="high",
        unsubscribe_url="https://example.com/u/123",
    ).send()
    msg = only(plain_smtp)
    assert msg["In-Reply-To"] == "<abc@example.com>"
    assert msg["References"] == "<root@example.com> <abc@example.com>"
    assert (msg["X-Priority"], msg["Importance"], msg["X-MSMail-Priority"]) == ("1", "High", "High")
    assert msg["List-Unsubscribe"] == "<https://example.com/u/123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(("priority", "number"), [("low", "5"), ("NORMAL", "3")])
def test_other_priorities(
    mailer: FluxMail, plain_smtp: SMTPTestServer, priority: str, number: str
) -> None:
    mailer.create("P", ["to@example.com"], "x", priority=priority).send()
    assert only(plain_smtp)["X-Priority"] == number


def test_inline_css(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    html = "<html><head><style>p { color: red }</style></head><body><p>Hi</p></body></html>"
    mailer.create("CSS", ["to@example.com"], html, html_body=True, inline_css=True).send()
    assert 'style="color: red' in only(plain_smtp).get_content()


def test_unicode_everywhere(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create(
        "Grüße aus Köln ✉", ["Jürgen Müller <jurgen@bücher.example>"], "Schöne Grüße\n— Ω"
    ).send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == ["jurgen@xn--bcher-kva.example"]
    assert received.message["Subject"] == "Grüße aus Köln ✉"
    assert received.message.get_content().splitlines() == ["Schöne Grüße", "— Ω"]
    assert received.data.isascii()  # encoded for any relay, 8BITMIME or not
    assert received.message["To"] == "Jürgen Müller <jurgen@xn--bcher-kva.example>"
    assert not any(opt.startswith("BODY=8BITMIME") for opt in received.mail_options)


def test_utf8_local_part_uses_smtputf8(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create("Hi", ["jörg@example.com"], "x").send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == ["jörg@example.com"]
    assert "SMTPUTF8" in received.mail_options
    assert received.message["To"] == "jörg@example.com"


def test_dots_and_line_endings_survive(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    body = ".leading dot\r\n.\r\nbare\nlf and bare\rcr\n..two dots"
    mailer.create("Dots", ["to@example.com"], body).send()
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.message.get_content().splitlines() == [
        ".leading dot",
        ".",
        "bare",
        "lf and bare",
        "cr",
        "..two dots",
    ]
    assert b"\n" not in received.data.replace(b"\r\n", b"")


def test_one_instance_many_messages(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create("First", ["a@example.com"], "1", cc=["c@example.com"]).send()
    mailer.create("Second", ["b@example.com"], "2").send()
    first, second = plain_smtp.wait_for_messages(2)
    assert second.rcpt_tos == ["b@example.com"]  # nothing carried over from the first
    assert "Cc" not in second.message
    assert first.message["Message-ID"] != second.message["Message-ID"]


def test_partial_refusal_is_reported_not_raised(smtp_server, caplog) -> None:
    from flux_testkit.smtpd import Faults

    server = smtp_server(faults=Faults(refuse_recipients={"gone@example.com": (550, "5.1.1 No")}))
    mailer = FluxMail("smtp", server.host, port=server.port, sender="from@example.com")
    mailer.create("Hi", ["ok@example.com", "gone@example.com"], "x").send()
    (received,) = server.wait_for_messages(1)
    assert received.rcpt_tos == ["ok@example.com"]
    assert mailer.last_result is not None
    assert mailer.last_result.accepted == ("ok@example.com",)
    refused = mailer.last_result.refused["gone@example.com"]
    assert (refused.code, refused.enhanced) == (550, "5.1.1")
    assert "gone@example.com" in caplog.text


def test_display_and_dry_run_send_nothing(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    mailer.create("Preview", ["to@example.com"], "Body text", bcc=["b@example.com"])
    shown = mailer.display()
    assert shown.startswith("Email Preview:\n")
    assert "Subject: Preview" in shown
    assert "Body text" in shown
    assert mailer.send(dry_run=True) == shown
    assert plain_smtp.connections == 0


def test_not_created_and_no_relay() -> None:
    mailer = FluxMail("smtp", "smtp.example.com", sender="a@example.com")
    for call in (mailer.send, mailer.display):
        with pytest.raises(FluxMailException) as info:
            call()
        assert info.value.code == "not_created"
    empty = FluxMail("smtp", "", sender="a@example.com").create("s", ["b@example.com"], "x")
    with pytest.raises(FluxMailException) as info:
        empty.send()
    assert info.value.code == "no_relay"


def test_send_message_with_ready_made_message(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    msg = EmailMessage()
    msg["From"] = "Me <me@example.com>"
    msg["To"] = "a@example.com, B <b@example.com>"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "Raw"
    msg.set_content("hello")
    result = mailer.send_message(msg)
    assert result.accepted == ("a@example.com", "b@example.com", "hidden@example.com")
    (received,) = plain_smtp.wait_for_messages(1)
    assert b"hidden@example.com" not in received.data
    assert msg["Bcc"] == "hidden@example.com"  # the caller's message is left alone
